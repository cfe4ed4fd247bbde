"""DiffX-UNet: base equivalence at init, null paths, dropout rates, slot permutation, save/load, SD loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from diffx.errors import ConfigError
from diffx.models.layout import BoxRaster, fourier_embed, pack_boxes
from diffx.models.unet import DiffXUNet
from diffx.train.ema import EMA
from diffx.train.unet import CAPTION_DROP, LAYOUT_DROP, dropped

BLOCKS = {
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}


def _inputs(seed: int = 0, batch: int = 2, slots: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(batch, slots, 4, generator=g)
    boxes = torch.stack([boxes[..., :2].minimum(boxes[..., 2:]), boxes[..., :2].maximum(boxes[..., 2:])], -1).flatten(2)
    return {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.tensor([10, 700][:batch]),
        "text_states": torch.randn(batch, 7, 32, generator=g),
        "text_mask": torch.ones(batch, 7),
        "boxes": boxes,
        "phrases": torch.randn(batch, slots, 16, generator=g),
        "box_mask": (torch.rand(batch, slots, generator=g) > 0.3).float(),
    }


def _base_twin(model: DiffXUNet) -> UNet2DConditionModel:
    """The plain UNet with the DiffX model's weights (no fusers, no layout inputs)."""
    base = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **BLOCKS).eval()
    state = {
        k.removeprefix("unet."): v
        for k, v in model.state_dict().items()
        if k.startswith("unet.") and ".fuser." not in k and "position_net" not in k
    }
    state["conv_in.weight"] = state["conv_in.weight"][:, :4]
    assert not base.load_state_dict(state, strict=True).missing_keys
    return base


def test_at_init_the_output_is_the_base_unets_for_any_layout() -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    base = _base_twin(model)
    with torch.no_grad():
        for seed in range(3):
            x = _inputs(seed)
            expected = base(
                x["sample"],
                x["timestep"],
                encoder_hidden_states=x["text_states"],
                encoder_attention_mask=x["text_mask"],
            ).sample
            torch.testing.assert_close(model(**x), expected, rtol=0, atol=0)


def test_dense_layout_channels_start_at_zero() -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, layout="dense", dense_channels=1, **BLOCKS).eval()
    base = _base_twin(model)
    x = _inputs(1)
    dense = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = model(x["sample"], x["timestep"], x["text_states"], x["text_mask"], dense=dense)
        expected = base(
            x["sample"], x["timestep"], encoder_hidden_states=x["text_states"], encoder_attention_mask=x["text_mask"]
        ).sample
    torch.testing.assert_close(out, expected)
    assert model.unet.conv_in.in_channels == 12 and model.dense_tokenizer(dense).shape == (2, 64, 32)


def test_painted_boxes_start_at_zero_and_enter_as_input_channels() -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, box_raster_channels=4, **BLOCKS).eval()
    base = _base_twin(model)
    x = _inputs(1)
    with torch.no_grad():
        expected = base(
            x["sample"], x["timestep"], encoder_hidden_states=x["text_states"], encoder_attention_mask=x["text_mask"]
        ).sample
        torch.testing.assert_close(model(**x), expected, rtol=0, atol=0)  # new channels at zero: the base UNet
        assert model.unet.conv_in.in_channels == 4 + 4 + 1  # latent + class-embedding channels + coverage
        model.unet.conv_in.weight[:, 4:].normal_()  # once they have learned something, the layout moves the output
        sideways = torch.tensor([0.25, 0.0, 0.25, 0.0])  # every box a quarter frame to the right
        moved = {**x, "boxes": (x["boxes"] + sideways).clamp(0, 1)}
        assert not torch.allclose(model(**x), model(**moved))
    model.freeze_base()
    assert model.unet.conv_in.weight.requires_grad and model.box_raster.project.weight.requires_grad


def test_without_layout_tokens_the_boxes_enter_by_the_raster_alone() -> None:
    """The raster-only ablation: no fuser, tokenizer or JME is built, and the painted boxes still steer it."""
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, box_raster_channels=4, layout_tokens=False, **BLOCKS).eval()
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if ".fuser." in n or n.startswith(("jme.", "box_tokenizer."))]
    x = _inputs(2)
    with torch.no_grad():
        model.unet.conv_in.weight[:, 4:].normal_()
        moved = {**x, "boxes": (x["boxes"] + torch.tensor([0.25, 0.0, 0.25, 0.0])).clamp(0, 1)}
        assert not torch.allclose(model(**x), model(**moved))
    with pytest.raises(ConfigError, match="would not reach the UNet"):
        DiffXUNet(sample_size=8, phrase_dim=16, box_raster_channels=0, layout_tokens=False, **BLOCKS)


def test_the_raster_covers_box_cells_with_the_smaller_box_in_front() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.5, 0.5], [0.0, 0.0, 0.1, 0.1]]])  # 1 x 3 x 4
    values = torch.tensor([[[1.0], [2.0], [5.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third slot is empty: it paints nothing
    painted = BoxRaster.paint(boxes, values, mask, (4, 8))
    assert painted.shape == (1, 2, 4, 8)
    value, coverage = painted[0, 0], painted[0, 1]
    torch.testing.assert_close(coverage, torch.ones(4, 8))  # the frame-sized box covers every cell
    inner = torch.zeros(4, 8, dtype=torch.bool)
    inner[1, 2:4] = True  # y 0.25-0.5 of 4 rows, x 0.25-0.5 of 8 columns
    assert (value[inner] == 2.0).all() and (value[~inner] == 1.0).all()  # the small box wins where both are
    reordered = BoxRaster.paint(boxes[:, [1, 0, 2]], values[:, [1, 0, 2]], mask[:, [1, 0, 2]], (4, 8))
    torch.testing.assert_close(painted, reordered)  # drawn by size, not by slot
    other = (boxes.flip(1), values, mask)  # another sample ahead of it in the batch
    pair = BoxRaster.paint(*(torch.cat([a, b]) for a, b in zip(other, (boxes, values, mask), strict=True)), (4, 8))
    torch.testing.assert_close(pair[1:], painted)  # sample by sample: a batch split over processes paints the same
    sliver = BoxRaster.paint(torch.tensor([[[0.0, 0.0, 0.0625, 0.5]]]), torch.ones(1, 1, 1), torch.ones(1, 1), (2, 8))
    torch.testing.assert_close(sliver[0, 1, 0, :2], torch.tensor([0.5, 0.0]))  # half a cell wide: half covered


def _open_gates(model: DiffXUNet) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense", "gate_attn", "gate_ff")):
                param.fill_(1.0)


def test_null_layout_and_empty_caption_paths() -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    _open_gates(model)
    x = _inputs(2)
    with torch.no_grad():
        with_layout = model(**x)
        null = model(**{**x, "box_mask": torch.zeros_like(x["box_mask"])})
        empty_caption = model(**{**x, "text_mask": torch.zeros_like(x["text_mask"])})
    assert torch.isfinite(null).all() and torch.isfinite(empty_caption).all()
    assert not torch.allclose(with_layout, null)  # with the gates open the layout matters
    tokens = model.box_tokenizer(x["boxes"], x["phrases"], torch.zeros_like(x["box_mask"]))
    assert torch.allclose(tokens[0, 0], tokens[1, 3])  # a null slot is the same vector wherever it sits


def test_slot_permutation_does_not_change_the_output() -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    _open_gates(model)
    x = _inputs(3)
    order = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = {
        **x,
        "boxes": x["boxes"][:, order],
        "phrases": x["phrases"][:, order],
        "box_mask": x["box_mask"][:, order],
    }
    with torch.no_grad():
        torch.testing.assert_close(model(**x), model(**permuted), atol=1e-5, rtol=1e-5)


def test_dropout_rates_match_their_settings() -> None:
    positions = list(range(6000))
    captions = np.mean(dropped(0, positions, 0.5, CAPTION_DROP))
    layouts = np.mean(dropped(0, positions, 0.1, LAYOUT_DROP))
    assert abs(captions - 0.5) < 0.025 and abs(layouts - 0.1) < 0.013  # ~4 standard errors
    both = np.mean(
        [
            a and b
            for a, b in zip(
                dropped(0, positions, 0.5, CAPTION_DROP), dropped(0, positions, 0.1, LAYOUT_DROP), strict=True
            )
        ]
    )
    assert abs(both - 0.05) < 0.012  # drawn independently
    assert dropped(0, positions[:50], 0.5, CAPTION_DROP) == dropped(0, positions[:50], 0.5, CAPTION_DROP)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    _open_gates(model)
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = DiffXUNet.from_pretrained(tmp_path / "unet").eval()
    x = _inputs(4)
    with torch.no_grad():
        torch.testing.assert_close(model(**x), loaded(**x))


def test_from_sd_loads_and_freezes_the_base(tmp_path: Path) -> None:
    torch.manual_seed(1)
    sd = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **BLOCKS).eval()
    sd.save_pretrained(tmp_path / "pipeline" / "unet")
    model = DiffXUNet.from_sd(str(tmp_path / "pipeline"), phrase_dim=16).eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".fuser." in n or not n.startswith("unet.") for n in trainable)
    assert any(n.startswith("jme.") for n in trainable) and any(n.startswith("box_tokenizer.") for n in trainable)
    assert set(EMA(model, 0.999).shadow) == trainable  # no fp32 copy of the frozen SD base
    x = _inputs(5)
    with torch.no_grad():
        expected = sd(
            x["sample"], x["timestep"], encoder_hidden_states=x["text_states"], encoder_attention_mask=x["text_mask"]
        ).sample
        torch.testing.assert_close(model(**x), expected, rtol=0, atol=0)


def test_fourier_embedding_and_box_packing() -> None:
    emb = fourier_embed(torch.tensor([[[0.1, 0.2, 0.5, 0.9]]]))
    assert emb.shape == (1, 1, 64)
    boxes, ids, mask = pack_boxes(
        [torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 6.0], [1.0, 1.0, 40.0, 30.0]]), torch.zeros(0, 4)],
        [torch.tensor([2, 0, 1]), torch.zeros(0, dtype=torch.long)],
        [(40, 80), (40, 80)],
        max_objects=2,
    )
    assert mask.tolist() == [[1, 1], [0, 0]] and ids[0].tolist() == [2, 1]  # the tiny box is the one dropped
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.0, 0.0, 0.125, 0.5]))


@pytest.mark.parametrize("batch", [1, 3])
def test_permutation_of_objects_in_a_batch_is_per_sample(batch: int) -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    _open_gates(model)
    x = _inputs(6, batch=1)
    with torch.no_grad():
        single = model(**x)
        repeated = model(**{k: v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in x.items()})
    torch.testing.assert_close(repeated, single.repeat(batch, 1, 1, 1), atol=1e-5, rtol=1e-5)


def test_fuser_gates_can_start_open_for_training_from_scratch() -> None:
    """With the gates open the layout changes the output; GLIGEN's zero gates leave it unchanged."""
    from diffusers.models.attention import GatedSelfAttentionDense

    torch.manual_seed(0)
    model = DiffXUNet(
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        norm_num_groups=8,
        phrase_dim=16,
        max_objects=4,
    ).eval()
    latents, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    states, mask = torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.long)
    phrases = torch.randn(1, 4, 16)

    def run(box_mask: torch.Tensor) -> torch.Tensor:
        boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.6]] * 4])
        return model(latents, t, states, mask, boxes=boxes, phrases=phrases, box_mask=box_mask)

    with torch.no_grad():
        assert torch.equal(run(torch.ones(1, 4)), run(torch.zeros(1, 4)))
        model.set_fuser_gates(1.0)
        gates = [m.alpha_attn.item() for m in model.modules() if isinstance(m, GatedSelfAttentionDense)]
        assert gates and all(g == 1.0 for g in gates)
        assert not torch.allclose(run(torch.ones(1, 4)), run(torch.zeros(1, 4)))

"""Tiny models built from configs and saved locally, so loading code is tested without any download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import CLIPTextModel

TINY_UNET_MODEL: dict[str, Any] = {
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 8,  # heads of 4 and 8 channels; the tolerance tests were set with these
}
"""The two-level DiffX-UNet the training and generation tests build (params.yaml's unet.model section)."""


def save_tiny_vae(folder: Path | str) -> None:
    """A seeded two-level MP-VAE for the demo's RGB + thermal + depth, saved like a train_vae output."""
    from diffx.models.mpvae import MPVAE

    torch.manual_seed(0)
    MPVAE(
        modalities=("rgb", "thermal", "depth"),
        channels=(3, 1, 1),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=0.5,
    ).save_pretrained(str(folder))


def tiny_evaluate(real: Path, tmp: Path, **overrides: Any) -> dict[str, Any]:
    """An evaluate section for 16x16 test shards: 2 detector steps, small features; outputs under ``tmp``."""
    return {
        "real": str(real),
        "test_split": "val",
        "features": {"dims": 16},
        "kid_subset_size": 4,
        "kid_subsets": 2,
        "detector": {"width": 8},
        "detector_train": {"steps": 2, "batch_size": 4, "ema_decay": None, "checkpoint_every": 2},
        "output": str(tmp / "detector"),
        "checkpoints": str(tmp / "ckpt"),
        "metrics": str(tmp / "eval.json"),
        "report": str(tmp / "eval-report.json"),
        "plots": str(tmp / "plots"),
        "grid": str(tmp / "samples.png"),
        "detector_seeds": [0, 1],
        "recipes": [{"name": "synthetic_1x"}],
        "real_detector": None,
        "curated": str(tmp / "curated"),
        **overrides,
    }


WORDS = (
    "an image of a street scene with car cars person people bicycle at night day left right centre far away close "
    "USER ASSISTANT describe this RGB thermal and depth"
)


def tiny_word_tokenizer() -> Any:
    """A word-level fast tokenizer over WORDS with the special tokens the tiny models use."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        [WORDS], trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>", "<image>"])
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )


def tiny_llava(path: Path) -> Path:
    """A 2-layer LLaVA (CLIP vision tower + Llama) with its processor and a word-level tokenizer."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    fast = tiny_word_tokenizer()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=fast,
        patch_size=8,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        ),
        text_config=LlamaConfig(
            vocab_size=len(fast),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=3,
        ),
        image_token_index=fast.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tiny_clip(path: Path, positions: int = 77) -> CLIPTextModel:
    """64 wide with one 64-d head: OpenAI checkpoints carry no head count, CLIP's convention is width / 64."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_word_tokenizer()
    torch.manual_seed(0)
    model = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=1,
            max_position_embeddings=positions,
            projection_dim=16,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=1,
        )
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def clip_to_openai(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """The inverse of the converter: HF CLIP text weights in OpenAI / Long-CLIP key layout."""
    s = {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}
    out = {
        "token_embedding.weight": s["embeddings.token_embedding.weight"],
        "positional_embedding": s["embeddings.position_embedding.weight"],
        "ln_final.weight": s["final_layer_norm.weight"],
        "ln_final.bias": s["final_layer_norm.bias"],
        "text_projection": torch.randn(64, 16),
        "visual.conv1.weight": torch.randn(4, 3, 2, 2),
    }
    for i in range(model.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}", f"transformer.resblocks.{i}"
        out[f"{dst}.attn.in_proj_weight"] = torch.cat([s[f"{src}.self_attn.{p}_proj.weight"] for p in "qkv"])
        out[f"{dst}.attn.in_proj_bias"] = torch.cat([s[f"{src}.self_attn.{p}_proj.bias"] for p in "qkv"])
        for a, b in {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }.items():
            out[f"{dst}.{a}.weight"], out[f"{dst}.{a}.bias"] = s[f"{src}.{b}.weight"], s[f"{src}.{b}.bias"]
    return out


def open_layout_paths(model: Any, seed: int | None = None) -> None:
    """Make the layout matter in an untrained or briefly trained DiffX-UNet, whichever path it has: open the gated
    fusers (the tokens) and give the zero-initialised painted / dense input channels weights (drawn with ``seed``,
    or from the global generator), as a trained model's would be."""
    model.set_fuser_gates(0.8)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.unet.conv_in.weight[:, model.config.latent_channels :].normal_(generator=generator)

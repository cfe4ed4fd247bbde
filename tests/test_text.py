"""Text encoders: the bundled MiniLM, a CLIP text tower from a local folder, the Long-CLIP converter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import CLIPTextModel

from diffx.errors import ConfigError
from diffx.models.text import TextEncoder, convert_longclip, longclip_state_to_hf

from .tiny_models import clip_to_openai, tiny_clip


def test_minilm_encodes_pools_and_truncates_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    encoder = TextEncoder("minilm", max_tokens=16)
    states, mask = encoder.encode(["An image of a car.", ""])
    assert states.shape == (2, 16, 384) and mask[0].sum() > mask[1].sum()
    pooled = encoder.pooled(["car", "person"])
    assert pooled.shape == (2, 384) and torch.allclose(pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(encoder.phrases(["car", "person"]), pooled)
    with caplog.at_level(logging.WARNING):
        states, _ = encoder.encode(["An image of a street with many cars. " * 20])
    assert states.shape == (1, 16, 384) and "truncated" in caplog.text
    close = torch.cosine_similarity(encoder.pooled(["a car"]), encoder.pooled(["an automobile"]))
    far = torch.cosine_similarity(encoder.pooled(["a car"]), encoder.pooled(["a person walking"]))
    assert close > far  # real pretrained weights, not a random tower


def test_clip_text_tower_from_a_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_clip(tmp_path / "clip")
    encoder = TextEncoder(f"clip:{tmp_path / 'clip'}", max_tokens=12)
    states, mask = encoder.encode(["an image of a car", "a person"])
    assert states.shape == (2, 12, 64) and encoder.pooled(["car"]).shape == (1, 64)
    assert mask[0].sum() > mask[1].sum()  # the longer caption has more real tokens
    # the paper's switch: the UNet sees every position (SD, the original DiffX); the tower's states are the same
    unmasked = TextEncoder(f"clip:{tmp_path / 'clip'}", max_tokens=12, mask_padding=False)
    states_all, mask_all = unmasked.encode(["an image of a car", "a person"])
    assert torch.equal(states_all, states) and bool(mask_all.eq(1).all()) and not bool(mask.eq(1).all())
    with pytest.raises(ConfigError, match="cannot load"):
        TextEncoder(f"clip:{tmp_path / 'missing'}")


def _positions(model: CLIPTextModel) -> torch.Tensor:
    tower = getattr(model, "text_model", model)  # transformers 4 nests the tower, 5 does not
    return tower.embeddings.position_embedding.weight


def test_longclip_checkpoint_converts_to_an_equivalent_clip_text_model(tmp_path: Path) -> None:
    reference = tiny_clip(tmp_path / "ref", positions=248).eval()
    state = clip_to_openai(reference)
    residual = torch.randn_like(state["positional_embedding"])
    state["positional_embedding_res"] = residual  # Long-CLIP's stretched positions beyond the first 20
    torch.save(state, tmp_path / "longclip-tiny.pt")
    folder = convert_longclip(str(tmp_path / "longclip-tiny.pt"))
    converted = CLIPTextModel.from_pretrained(folder).eval()
    assert converted.config.max_position_embeddings == 248
    expected_positions = _positions(reference).detach().clone()
    expected_positions[20:] = residual[20:]
    torch.testing.assert_close(_positions(converted), expected_positions)
    with torch.no_grad():
        _positions(reference).copy_(expected_positions)
        ids = torch.randint(4, 30, (2, 200))
        torch.testing.assert_close(converted(ids).last_hidden_state, reference(ids).last_hidden_state)
    assert convert_longclip(str(tmp_path / "longclip-tiny.pt")) == folder  # converted once, then reused
    config, _ = longclip_state_to_hf(state)
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 64


class _CallsOnLoad:
    """Unpickling this calls a function: what a hostile checkpoint does. The safe loader must refuse it."""

    def __reduce__(self) -> tuple:
        import os

        return (os.getpid, ())


def test_longclip_refuses_a_file_that_is_not_plain_weights(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": _CallsOnLoad()}))
    with pytest.raises(ConfigError, match="not a plain weights file"):
        convert_longclip(str(tmp_path / "evil.pt"))

"""The per-batch cache of step-invariant work: same noise predictions as the uncached UNet, restored after."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.attention_processor import Attention

from diffx.models.step_cache import CachedCrossAttention, step_invariant_cache
from diffx.models.unet import DiffXUNet

from .test_unet import BLOCKS, _inputs
from .tiny_models import open_layout_paths


@pytest.mark.parametrize("layout", ["boxes", "painted boxes", "dense"])
def test_cached_steps_predict_what_the_uncached_model_predicts(layout: str) -> None:
    torch.manual_seed(0)
    raster = 4 if layout == "painted boxes" else 0
    layout = "boxes" if raster else layout
    model = DiffXUNet(sample_size=8, phrase_dim=16, layout=layout, box_raster_channels=raster, **BLOCKS).eval()
    open_layout_paths(model)  # the layout tokens and the painted / dense channels both change the output
    x = _inputs(3)
    layout_args = (
        {"boxes": x["boxes"], "phrases": x["phrases"], "box_mask": x["box_mask"]}
        if layout == "boxes"
        else {"dense": torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))}
    )
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        expected = []
        for step in range(3):
            sample = torch.randn(2, 4, 8, 8, generator=g)
            timestep = torch.tensor([900 - 300 * step] * 2)
            reference = model(sample, timestep, x["text_states"], x["text_mask"], **layout_args)
            expected.append((sample, timestep, reference))
        with step_invariant_cache(model):
            conditioning = model.condition(x["text_states"], x["text_mask"], **layout_args)
            for sample, timestep, reference in expected:
                got = model(sample, timestep, x["text_states"], x["text_mask"], conditioning=conditioning)
                torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)


def test_a_new_caption_is_projected_again_not_served_from_the_cache() -> None:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    model.set_fuser_gates(0.8)
    x = _inputs(4)
    other = torch.randn_like(x["text_states"])
    with torch.no_grad():
        reference = model(**{**x, "text_states": other})
        with step_invariant_cache(model):
            model(**x)  # fills the cache with the first caption
            got = model(**{**x, "text_states": other})
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)


def test_the_cache_is_removed_on_exit_even_after_an_error() -> None:
    model = DiffXUNet(sample_size=8, phrase_dim=16, **BLOCKS).eval()
    cross = [m for m in model.modules() if isinstance(m, Attention) and m.is_cross_attention]
    fusers = [m for m in model.modules() if isinstance(m, GatedSelfAttentionDense)]
    before = [type(m.get_processor()) for m in cross]
    assert cross and fusers
    with pytest.raises(RuntimeError, match="boom"), step_invariant_cache(model):
        assert all(isinstance(m.get_processor(), CachedCrossAttention) for m in cross)
        assert all("forward" in vars(f) for f in fusers)
        raise RuntimeError("boom")
    assert [type(m.get_processor()) for m in cross] == before
    assert not any("forward" in vars(f) for f in fusers)

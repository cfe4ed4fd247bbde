"""MP-VAE model: any modality list, the Laplacian pyramid, safetensors round trip, SD initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from diffx.errors import ConfigError
from diffx.models.mpvae import MPVAE, laplacian_pyramid

TINY = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4}


def _images(spec: dict[str, int], size: int = 16, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(batch, c, size, size, generator=g) * 2 - 1 for name, c in spec.items()}


@pytest.mark.parametrize("spec", [{"rgb": 3}, {"rgb": 3, "thermal": 1}, {"rgb": 3, "thermal": 1, "depth": 1, "nir": 1}])
def test_any_modality_list_shares_one_latent(spec: dict[str, int]) -> None:
    model = MPVAE(modalities=tuple(spec), channels=tuple(spec.values()), **TINY)
    out = model(_images(spec), noise=torch.zeros(2, 4, 8, 8))
    assert out.posterior.mean.shape == (2, 4, 8, 8)
    assert {k: v.shape[1] for k, v in out.reconstructions.items()} == spec
    assert set(model.stems) == set(spec) and set(model.decoders) == set(spec)


def test_wrong_inputs_are_named() -> None:
    model = MPVAE(modalities=("rgb", "thermal"), channels=(3, 1), **TINY)
    with pytest.raises(ValueError, match="expects modalities"):
        model.encode(_images({"rgb": 3}))
    with pytest.raises(ValueError, match="'thermal': expected 1 channel"):
        model.encode(_images({"rgb": 3, "thermal": 3}))
    with pytest.raises(ValueError, match="divisible by 2"):
        model.encode(_images({"rgb": 3, "thermal": 1}, size=15))
    with pytest.raises(ConfigError, match="2 modalities but 1 channel"):
        MPVAE(modalities=("rgb", "thermal"), channels=(3,), **TINY)


def test_laplacian_pyramid_reconstructs_the_image() -> None:
    image = torch.rand(1, 3, 32, 24, generator=torch.Generator().manual_seed(1))
    bands = laplacian_pyramid(image, 4)
    assert [tuple(b.shape[-2:]) for b in bands] == [(32, 24), (16, 12), (8, 6), (4, 3)]
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        rebuilt = band + torch.nn.functional.interpolate(
            rebuilt, size=band.shape[-2:], mode="bicubic", align_corners=False
        )
    torch.testing.assert_close(rebuilt, image)


def test_pyramid_switch_changes_the_encoder() -> None:
    torch.manual_seed(0)
    with_pyramid = MPVAE(modalities=("rgb", "thermal"), channels=(3, 1), use_pyramid=True, **TINY)
    without = MPVAE(modalities=("rgb", "thermal"), channels=(3, 1), use_pyramid=False, **TINY)
    assert len(with_pyramid.pyramid) == 2 and len(without.pyramid) == 0
    assert sum(p.numel() for p in with_pyramid.parameters()) > sum(p.numel() for p in without.parameters())
    without.load_state_dict({k: v for k, v in with_pyramid.state_dict().items() if not k.startswith("pyramid.")})
    x = _images({"rgb": 3, "thermal": 1})
    assert not torch.allclose(with_pyramid.encode(x).mean, without.encode(x).mean)


def test_replicate_grey_feeds_three_channels() -> None:
    model = MPVAE(modalities=("thermal",), channels=(1,), replicate_grey=True, **TINY)
    assert model.stems["thermal"][0].in_channels == 3
    assert model.decoders["thermal"].conv_out.out_channels == 1
    assert model(_images({"thermal": 1})).reconstructions["thermal"].shape[1] == 1


def test_save_and_load_pretrained_in_safetensors(tmp_path: Path) -> None:
    model = MPVAE(modalities=("rgb", "depth"), channels=(3, 1), scaling_factor=0.5, **TINY)
    model.save_pretrained(tmp_path / "vae")
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "vae").glob("*.bin"))
    loaded = MPVAE.from_pretrained(tmp_path / "vae")
    assert loaded.config.modalities == ["rgb", "depth"] or tuple(loaded.config.modalities) == ("rgb", "depth")
    assert loaded.config.scaling_factor == 0.5
    x = _images({"rgb": 3, "depth": 1})
    model.eval()
    loaded.eval()
    torch.testing.assert_close(model(x).reconstructions["depth"], loaded(x).reconstructions["depth"])
    with pytest.raises(ConfigError, match="trained for modalities"):
        loaded.check_modalities(("rgb", "thermal"), (3, 1), "ckpt")


@pytest.fixture
def tiny_sd_vae(tmp_path: Path) -> Path:
    """A tiny SD-style AutoencoderKL built from a config and saved locally (no download)."""
    torch.manual_seed(0)
    sd = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    path = tmp_path / "sd-vae"
    sd.save_pretrained(path)
    return path


def test_from_sd_vae_copies_trunk_and_decoders(tiny_sd_vae: Path) -> None:
    sd = AutoencoderKL.from_pretrained(tiny_sd_vae).eval()
    model = MPVAE.from_sd_vae(str(tiny_sd_vae), ("rgb", "thermal"), (3, 1)).eval()
    assert tuple(model.config.block_out_channels) == (8, 16)
    for key, value in sd.encoder.state_dict().items():
        if not key.startswith("conv_in."):
            torch.testing.assert_close(model.encoder.state_dict()[key], value)
    torch.testing.assert_close(model.stems["rgb"][0].weight, sd.encoder.conv_in.weight)
    torch.testing.assert_close(model.stems["thermal"][0].weight, sd.encoder.conv_in.weight.sum(1, keepdim=True))
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = sd.decode(z).sample
        decoded = model.decode(z)
    torch.testing.assert_close(decoded["rgb"], expected)  # every decoder starts as SD's decoder
    torch.testing.assert_close(decoded["thermal"], expected.mean(dim=1, keepdim=True), atol=1e-5, rtol=1e-5)


def test_shared_decoder_reads_every_modality_from_one_trunk() -> None:
    spec = {"rgb": 3, "thermal": 1, "depth": 1}
    model = MPVAE(modalities=tuple(spec), channels=tuple(spec.values()), decoder="shared", **TINY).eval()
    assert set(model.decoders) == {"shared"} and model.decoders["shared"].conv_out.out_channels == 5
    out = model(_images(spec))
    assert {k: v.shape[1] for k, v in out.reconstructions.items()} == spec
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z, ["depth"])["depth"], model.decode(z)["depth"])
    with pytest.raises(ConfigError, match="decoder must be"):
        MPVAE(modalities=("rgb",), channels=(3,), decoder="one", **TINY)


def test_posterior_logvar_init_starts_the_latent_narrow() -> None:
    x = _images({"rgb": 3, "thermal": 1})
    stds = []
    for init in (0.0, -6.0):
        torch.manual_seed(0)
        model = MPVAE(modalities=("rgb", "thermal"), channels=(3, 1), posterior_logvar_init=init, **TINY)
        with torch.no_grad():
            stds.append(float(model.encode(x).std.mean()))
    assert stds[1] < 0.1 * stds[0]  # exp(-6 / 2) = 0.05 of the default's spread


def test_from_sd_vae_shared_decoder_starts_as_sd(tiny_sd_vae: Path) -> None:
    sd = AutoencoderKL.from_pretrained(tiny_sd_vae).eval()
    model = MPVAE.from_sd_vae(str(tiny_sd_vae), ("rgb", "thermal", "depth"), (3, 1, 1), decoder="shared").eval()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = sd.decode(z).sample
        decoded = model.decode(z)
    torch.testing.assert_close(decoded["rgb"], expected)
    for grey in ("thermal", "depth"):
        torch.testing.assert_close(decoded[grey], expected.mean(dim=1, keepdim=True), atol=1e-5, rtol=1e-5)

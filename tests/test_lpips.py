"""LPIPS-VGG in plain torch against the reference ``lpips`` package, and its weights-only loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffx.config import LpipsConfig
from diffx.errors import ConfigError
from diffx.models.lpips import LPIPS, load_lpips
from tests.lpips_reference import inputs, weights

FIXTURE = Path(__file__).parent / "fixtures" / "lpips_reference.json"


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded weights in both published formats: torchvision/lpips .pth and safetensors."""
    root = tmp_path_factory.mktemp("lpips")
    trunk, heads = weights()
    trunk_t = {k: torch.from_numpy(v) for k, v in trunk.items()}
    trunk_t["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's file has the classifier too: ignored
    heads_t = {k: torch.from_numpy(v) for k, v in heads.items()}
    torch.save(trunk_t, root / "vgg16-397923af.pth")
    torch.save(heads_t, root / "vgg.pth")
    save_file(trunk_t, str(root / "vgg16.safetensors"))
    save_file(heads_t, str(root / "heads.safetensors"))
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize("trunk,heads", [("vgg16-397923af.pth", "vgg.pth"), ("vgg16.safetensors", "heads.safetensors")])
def test_lpips_matches_the_reference_package(weight_files: dict[str, Path], trunk: str, heads: str) -> None:
    model = LPIPS.from_files(weight_files[trunk], weight_files[heads])
    expected = json.loads(FIXTURE.read_text())["distances"]
    with torch.no_grad():
        for (a, b), want in zip(inputs(), expected, strict=True):
            got = model(torch.from_numpy(a), torch.from_numpy(b))
            np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-4, atol=1e-7)


def test_grey_images_are_compared_as_three_equal_channels(weight_files: dict[str, Path]) -> None:
    model = LPIPS.from_files(weight_files["vgg16.safetensors"], weight_files["heads.safetensors"])
    grey_a, grey_b = (torch.from_numpy(x[:, :1].copy()) for x in inputs()[2])
    expected = json.loads(FIXTURE.read_text())["distances"][2]
    with torch.no_grad():
        np.testing.assert_allclose(model(grey_a, grey_b).numpy(), np.array(expected), rtol=1e-4)
        assert float(model(grey_a, grey_a).abs().max()) == 0.0


def test_lpips_passes_gradients_to_the_images_only(weight_files: dict[str, Path]) -> None:
    """As a loss term: the image gets a gradient, the frozen network none."""
    model = LPIPS.from_files(weight_files["vgg16.safetensors"], weight_files["heads.safetensors"])
    a, b = (torch.from_numpy(x) for x in inputs()[0])
    a.requires_grad_(True)
    model(a, b).sum().backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would have run",))


def test_files_that_need_unpickling_or_are_not_vgg_are_refused(tmp_path: Path, weight_files: dict[str, Path]) -> None:
    evil = tmp_path / "vgg16.pth"
    evil.write_bytes(pickle.dumps({"features.0.weight": _Payload()}))
    with pytest.raises(ConfigError, match="not a plain weights file for VGG16"):
        LPIPS.from_files(evil, weight_files["vgg.pth"])
    with pytest.raises(ConfigError, match="not a torchvision VGG16 checkpoint"):
        LPIPS.from_files(weight_files["vgg.pth"], weight_files["vgg.pth"])
    with pytest.raises(ConfigError, match="not LPIPS-VGG heads"):
        LPIPS.from_files(weight_files["vgg16.safetensors"], weight_files["vgg16.safetensors"])
    with pytest.raises(ConfigError, match="weights not found"):
        LPIPS.from_files(tmp_path / "absent.pth", weight_files["vgg.pth"])


def test_a_trunk_of_another_width_is_named_with_its_shape(tmp_path: Path, weight_files: dict[str, Path]) -> None:
    trunk = {k: torch.from_numpy(v) for k, v in weights()[0].items()}
    trunk["features.0.weight"] = torch.zeros(32, 3, 3, 3)  # a narrower first layer than VGG16's 64
    save_file(trunk, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(ConfigError, match=r"narrow.safetensors: 0.weight has shape \(32, 3, 3, 3\), expected \(64"):
        LPIPS.from_files(tmp_path / "narrow.safetensors", weight_files["heads.safetensors"])


def test_load_lpips_follows_the_settings(weight_files: dict[str, Path]) -> None:
    assert load_lpips(LpipsConfig()) is None  # optional: no files, no LPIPS
    files = LpipsConfig(vgg16=str(weight_files["vgg16.safetensors"]), heads=str(weight_files["heads.safetensors"]))
    model = load_lpips(files, "cpu")
    assert isinstance(model, LPIPS) and next(model.parameters()).device.type == "cpu"

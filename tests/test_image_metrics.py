"""PSNR and SSIM through torchmetrics give the numbers diffx's own implementation gave (issue #37)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffx.config import DemoConfig
from diffx.data.demo import write_demo
from diffx.metrics.image_metrics import PSNR_CAP, psnr, ssim


@pytest.fixture(scope="module")
def demo_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo's validation frames, drawn again from its world (seed and size of params.yaml)."""
    demo = DemoConfig()
    root = tmp_path_factory.mktemp("demo")
    write_demo(str(root), seed=demo.seed, width=demo.width, height=demo.height, splits={"val": demo.splits["val"]})
    return root


def _reference_psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """diffx's implementation before torchmetrics: the numbers the committed metrics were measured with."""
    mse = ((prediction - target) ** 2).flatten(1).mean(dim=1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


def _reference_ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Wang et al. 2004 over the valid windows, written out (11 x 11 Gaussian, sigma 1.5, K1 0.01, K2 0.03)."""
    channels = prediction.shape[1]
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, 11, 11).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    x, y = prediction, target
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(dim=1)


def _frames(root: Path, modality: str) -> torch.Tensor:
    files = sorted((root / modality).glob("*val*.png"))
    assert files, f"no validation frames in {root / modality}"
    arrays = []
    for file in files:
        array = np.asarray(Image.open(file)).astype(np.float32)
        array = array / (65535.0 if array.max() > 255 else 255.0)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


@pytest.mark.parametrize("modality", ["rgb", "thermal", "depth"])
def test_torchmetrics_gives_the_earlier_numbers_on_the_demo_validation_frames(demo_val: Path, modality: str) -> None:
    target = _frames(demo_val, modality)
    generator = torch.Generator().manual_seed(0)
    blurred = F.avg_pool2d(F.pad(target, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    for prediction in (
        (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1),  # noise
        blurred,  # what a VAE's smoothing looks like
        F.interpolate(F.avg_pool2d(target, 8), size=target.shape[-2:], mode="bilinear"),  # the /8 baseline
    ):
        torch.testing.assert_close(psnr(prediction, target), _reference_psnr(prediction, target), atol=1e-4, rtol=0)
        torch.testing.assert_close(ssim(prediction, target), _reference_ssim(prediction, target), atol=1e-4, rtol=0)


def test_a_perfect_reconstruction_scores_the_cap_and_one(demo_val: Path) -> None:
    target = _frames(demo_val, "thermal")[:2]
    assert psnr(target, target).tolist() == [PSNR_CAP, PSNR_CAP]
    torch.testing.assert_close(ssim(target, target), torch.ones(2))


def test_ssim_names_a_frame_too_small_for_its_window() -> None:
    with pytest.raises(ValueError, match="larger than 11 px"):
        ssim(torch.zeros(1, 1, 8, 32), torch.zeros(1, 1, 8, 32))

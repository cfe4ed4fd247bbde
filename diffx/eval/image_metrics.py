"""Per-image reconstruction metrics on tensors in [0, 1]: PSNR and SSIM.

Own implementations (a few lines each) rather than torchmetrics/skimage, so the default install stays
small; SSIM follows Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB (B,), on tensors B x C x H x W; a perfect match is capped at 100 dB."""
    mse = ((prediction.float() - target.float()) ** 2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))).clamp_max(100.0)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(
    prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image mean SSIM (B,), channels averaged; 'valid' windows only, as in the reference code."""
    x, y = prediction.float(), target.float()
    channels = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    kernel = _gaussian_window(size, sigma, channels, x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(dim=1)

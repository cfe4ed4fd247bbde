"""Per-image reconstruction metrics on tensors in [0, 1]: PSNR and SSIM, through torchmetrics.

SSIM is Wang et al. 2004 (11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) averaged over the windows that
lie inside the image, as the reference code does: torchmetrics pads the image by reflection and averages every
position, so the SSIM map it returns is cropped by the window's half-width first. The two are the same numbers as
diffx's earlier own implementation to 1e-5 (tests/test_image_metrics.py, on the demo's validation frames).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PSNR_CAP = 100.0  # dB: a perfect reconstruction scores this, not infinity (means and JSON stay finite)
SIGMA = 1.5
HALF_WINDOW = int(3.5 * SIGMA + 0.5)  # torchmetrics' Gaussian window: 2 * 5 + 1 = 11 pixels


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB (B,), on tensors B x C x H x W; a perfect match is capped at 100 dB."""
    x, y = prediction.float(), target.float()
    values = peak_signal_noise_ratio(x, y, data_range=data_range, reduction="none", dim=(1, 2, 3))
    return values.nan_to_num(posinf=PSNR_CAP).clamp_max(PSNR_CAP)


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image mean SSIM (B,) over the windows inside the image, channels averaged."""
    x, y = prediction.float(), target.float()
    if min(x.shape[-2:]) <= 2 * HALF_WINDOW:
        raise ValueError(f"SSIM needs images larger than {2 * HALF_WINDOW + 1} px a side, got {tuple(x.shape[-2:])}")
    _, full = structural_similarity_index_measure(
        x, y, sigma=SIGMA, data_range=data_range, reduction="none", return_full_image=True
    )
    inside = full[..., HALF_WINDOW:-HALF_WINDOW, HALF_WINDOW:-HALF_WINDOW]
    return inside.flatten(1).mean(dim=1)

"""Cross-modal alignment: do the RGB and the X image of a pair show edges in the same places?

Thermal and depth do not share RGB's intensities, but object and horizon boundaries are edges in every
modality. The score of a pair is the Pearson correlation of the two Sobel gradient-magnitude maps
(lightly blurred, so one pixel of disagreement is not punished); a registered pair also correlates best
at zero shift, so the share of pairs whose best shift within +-``max_shift`` px is within one pixel of zero
is reported too. Both are compared with real pairs, which set what "aligned" means for the data.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_BLUR = torch.tensor([1.0, 2.0, 1.0])


def luminance(images: torch.Tensor) -> torch.Tensor:
    """N x C x H x W in [0, 1] -> N x 1 x H x W (Rec. 601 weights for RGB; grey passes through)."""
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    return images[:, :1]


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance, blurred 3x3: N x 1 x H x W."""
    grey = luminance(images.float())
    kx = _SOBEL_X.view(1, 1, 3, 3)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    magnitude = torch.sqrt(F.conv2d(padded, kx) ** 2 + F.conv2d(padded, kx.transpose(2, 3)) ** 2 + 1e-12)
    blur = (_BLUR[:, None] * _BLUR[None, :] / 16).view(1, 1, 3, 3)
    return F.conv2d(F.pad(magnitude, (1, 1, 1, 1), mode="replicate"), blur)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of two N x ... tensors."""
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)


def pair_scores(rgb: torch.Tensor, other: torch.Tensor, max_shift: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge correlation at zero shift and the best shift (dy, dx) per pair: (N,), (N, 2)."""
    a, b = edge_map(rgb), edge_map(other)
    m = max_shift
    h, w = a.shape[-2:]
    if h <= 2 * m + 2 or w <= 2 * m + 2:
        raise ValueError(f"images of {w}x{h} px are too small for a registration search of +-{m} px")
    centre = b[..., m : h - m, m : w - m]
    best = torch.full((len(a),), -2.0)
    best_shift = torch.zeros(len(a), 2, dtype=torch.long)
    zero = torch.zeros(len(a))
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            score = _correlation(a[..., m + dy : h - m + dy, m + dx : w - m + dx], centre)
            if dy == 0 and dx == 0:
                zero = score
            better = score > best
            best = torch.where(better, score, best)
            best_shift[better] = torch.tensor([dy, dx])
    return zero, best_shift


def summarize(zero: torch.Tensor, best_shift: torch.Tensor) -> dict[str, Any]:
    """Mean / median edge correlation at zero shift and the share of pairs registered within 1 px."""
    registered = (best_shift.abs() <= 1).all(dim=1).double().mean()
    return {
        "edge_correlation": round(float(zero.mean()), 4),
        "edge_correlation_median": round(float(zero.median()), 4),
        "registered_share": round(float(registered), 4),
        "pairs": len(zero),
    }


def alignment(rgb: torch.Tensor, other: torch.Tensor, max_shift: int = 4) -> dict[str, Any]:
    return summarize(*pair_scores(rgb, other, max_shift))


def shift_image(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate N x C x H x W by (dy, dx) px, filling the uncovered border by edge replication."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (abs(dx), abs(dx), abs(dy), abs(dy)), mode="replicate")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[..., top : top + h, left : left + w]

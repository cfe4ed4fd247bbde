"""Does a generated sample follow its dense layout? The paper's measures, one per layout kind.

- segmentation: mean IoU between the map a small segmentation net (trained on the real data, diffx/models/
  layout_net.py) predicts from the generated images and the planned map; the same net on real test frames
  gives the ceiling, on the misaligned control the floor;
- saliency: S-measure (Fan et al., ICCV 2017: structure similarity of object and region) and MAE between the
  predicted and the planned mask;
- edges: SSIM between the planned edge map and the Sobel edges of the generated RGB (no net needed);
- face renderings: not measured (it needs the 3DDFA fitter that produced the maps).
Every function takes whole batches and returns plain numbers, so the evaluation reports them as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffx.metrics.image_metrics import ssim

EPS = 1e-8


class ConfusionMatrix:
    """Pixel counts of (planned, predicted) label pairs over a whole set: mIoU of the set, not of the mean image."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, predicted: torch.Tensor, planned: torch.Tensor) -> None:
        index = planned.long().flatten() * self.num_classes + predicted.long().flatten()
        self.counts += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def iou(self) -> torch.Tensor:
        """Per class; NaN for a class neither planned nor predicted anywhere (left out of the mean)."""
        hits = self.counts.diag().double()
        union = self.counts.sum(0).double() + self.counts.sum(1).double() - hits
        return torch.where(union > 0, hits / union.clamp(min=1), torch.full_like(hits, float("nan")))

    def mean_iou(self) -> float:
        iou = self.iou()
        present = ~iou.isnan()
        return float(iou[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(self.counts.diag().sum() / total) if total else float("nan")


def _object_score(values: torch.Tensor) -> float:
    if values.numel() == 0:
        return 0.0
    mean = float(values.mean())
    std = float(values.std()) if values.numel() > 1 else 0.0
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


def _region_ssim(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    count = prediction.numel()
    if count == 0:
        return 0.0
    x, y = float(prediction.mean()), float(truth.mean())
    if count > 1:
        var_x = float(((prediction - x) ** 2).sum()) / (count - 1)
        var_y = float(((truth - y) ** 2).sum()) / (count - 1)
        cov = float(((prediction - x) * (truth - y)).sum()) / (count - 1)
    else:
        var_x = var_y = cov = 0.0
    alpha = 4.0 * x * y * cov
    beta = (x * x + y * y) * (var_x + var_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def s_measure(prediction: torch.Tensor, truth: torch.Tensor, alpha: float = 0.5) -> float:
    """Structure measure of one saliency map: ``prediction`` in [0, 1], ``truth`` binary, both H x W."""
    pred, gt = prediction.double(), (truth > 0.5).double()
    share = float(gt.mean())
    if share == 0:
        return 1.0 - float(pred.mean())
    if share == 1:
        return float(pred.mean())
    objects = share * _object_score(pred[gt > 0]) + (1 - share) * _object_score(1 - pred[gt == 0])
    rows, cols = torch.nonzero(gt, as_tuple=True)
    cy, cx = round(float(rows.float().mean())), round(float(cols.float().mean()))
    height, width = gt.shape
    regions = 0.0
    for ys in (slice(0, cy), slice(cy, height)):
        for xs in (slice(0, cx), slice(cx, width)):
            part = gt[ys, xs]
            regions += part.numel() / (height * width) * _region_ssim(pred[ys, xs], part)
    return max(0.0, alpha * objects + (1 - alpha) * regions)


def saliency_scores(predictions: torch.Tensor, truths: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per image: (S-measure, MAE) for B x 1 x H x W predictions in [0, 1] and planned masks."""
    s_values = [s_measure(p[0], t[0]) for p, t in zip(predictions, truths, strict=True)]
    mae = (predictions.float() - (truths > 0.5).float()).abs().flatten(1).mean(1).tolist()
    return s_values, mae


def sobel_magnitude(rgb: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] -> B x 1 x H x W edge strength, each image scaled to its own maximum (as the
    edge layouts are made, diffx/data/layouts.py)."""
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=rgb.device)
    kernels = torch.stack([kx, kx.T])[:, None]
    grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grad.pow(2).sum(1, keepdim=True).sqrt()
    return magnitude / magnitude.flatten(1).amax(1).clamp(min=EPS).view(-1, 1, 1, 1)


def edge_ssim(rgb: torch.Tensor, planned: torch.Tensor) -> list[float]:
    """Per image: SSIM between the Sobel edges of ``rgb`` and the planned edge map (B x 1 x H x W in [0, 1])."""
    return ssim(sobel_magnitude(rgb.float()), planned.float()).tolist()

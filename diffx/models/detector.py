"""A compact CenterNet-style detector for the evaluation (layout fidelity and the downstream gain).

Why our own: torchvision's detectors would pull a torch build that does not match the pinned one, and
the evaluation needs a detector trained from scratch on small multi-modal data anyway. CenterNet
(Zhou et al. 2019, "Objects as Points") is the simplest detector that trains well from scratch: one
heatmap per class at stride 4, a size and a sub-pixel offset per centre, no anchors and no NMS beyond a
3x3 max-pool. The input is the modalities stacked as channels, so RGB and thermal evidence add up.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(8, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        return F.silu(x + self.norm2(self.conv2(y)))


def downsample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, cout), nn.SiLU())


class CenterNet(ModelMixin, ConfigMixin):
    """Stride-4 heads over a small residual backbone (strides 2..16) with a top-down path back to 4."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 5,
        num_classes: int = 3,
        width: int = 32,
        inputs: tuple[str, ...] = (),
        classes: tuple[str, ...] = (),
    ):
        super().__init__()
        w = width
        self.stage2 = nn.Sequential(downsample(in_channels, w), ResidualBlock(w))  # 1/2: no full-resolution layer
        self.stage4 = nn.Sequential(downsample(w, 2 * w), ResidualBlock(2 * w), ResidualBlock(2 * w))  # 1/4
        self.stage8 = nn.Sequential(downsample(2 * w, 4 * w), ResidualBlock(4 * w), ResidualBlock(4 * w))  # 1/8
        self.stage16 = nn.Sequential(downsample(4 * w, 4 * w), ResidualBlock(4 * w))  # 1/16
        self.lateral8 = nn.Conv2d(4 * w, 4 * w, 1)
        self.lateral4 = nn.Conv2d(2 * w, 4 * w, 1)
        self.neck = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.SiLU())
        self.heatmap = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * w, num_classes, 1))
        self.size = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * w, 2, 1))
        self.offset = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * w, 2, 1))
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.1) / 0.1))  # prior 0.1: a stable focal start

    stride = 4
    multiple = 16  # inputs are padded to a multiple of this

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c4 = self.stage4(self.stage2(x))
        c8 = self.stage8(c4)
        c16 = self.stage16(c8)
        p8 = self.lateral8(c8) + F.interpolate(c16, size=c8.shape[-2:], mode="nearest")
        p4 = self.lateral4(c4) + F.interpolate(p8, size=c4.shape[-2:], mode="nearest")
        feature = self.neck(p4)
        return {"heatmap": self.heatmap(feature), "size": self.size(feature), "offset": self.offset(feature)}


def stack_inputs(images: dict[str, torch.Tensor], inputs: tuple[str, ...] | list[str]) -> torch.Tensor:
    """Modalities (N x C x H x W in [0, 1]) -> one N x sum(C) x H' x W' tensor in [-1, 1], padded to 16."""
    x = torch.cat([images[name] for name in inputs], dim=1) * 2 - 1
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % CenterNet.multiple, (-w) % CenterNet.multiple
    return F.pad(x, (0, pad_w, 0, pad_h), value=-1.0) if pad_h or pad_w else x


# ------------------------------------------------------------------------------------------ targets
def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre error that still gives IoU >= min_overlap (three cases)."""
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def encode_targets(
    boxes: np.ndarray, labels: np.ndarray, num_classes: int, out_h: int, out_w: int, stride: int = 4
) -> dict[str, np.ndarray]:
    """Boxes (N x 4 px, x0 y0 x1 y1) -> class heatmaps with Gaussian peaks, and size / offset at the peaks."""
    heatmap = np.zeros((num_classes, out_h, out_w), np.float32)
    size = np.zeros((2, out_h, out_w), np.float32)
    offset = np.zeros((2, out_h, out_w), np.float32)
    mask = np.zeros((out_h, out_w), np.float32)
    ys, xs = np.mgrid[0:out_h, 0:out_w]
    for (x0, y0, x1, y1), label in zip(boxes.reshape(-1, 4) / stride, labels.reshape(-1), strict=True):
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), out_w - 1), min(int(cy), out_h - 1)
        radius = max(0, int(gaussian_radius(h, w)))
        sigma = (2 * radius + 1) / 6
        peak = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
        np.maximum(heatmap[label], peak, out=heatmap[label])
        size[:, iy, ix] = (w, h)
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos_loss = torch.log(prob) * (1 - prob) ** alpha * positive
    neg_loss = torch.log(1 - prob) * prob**alpha * (1 - target) ** beta * (1 - positive)
    return -(pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1.0)


# ------------------------------------------------------------------------------------------ decoding
@torch.no_grad()
def decode(
    outputs: dict[str, torch.Tensor],
    image_size: tuple[int, int],
    *,
    max_detections: int = 100,
    score_threshold: float = 0.01,
    stride: int = 4,
) -> list[dict[str, torch.Tensor]]:
    """Peaks of the heatmap (3x3 max-pool NMS) -> per image boxes (px, clipped), scores and labels."""
    heat = torch.sigmoid(outputs["heatmap"].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    n, classes, h, w = peaks.shape
    k = min(max_detections, classes * h * w)
    scores, index = peaks.flatten(1).topk(k, dim=1)
    labels = index // (h * w)
    cells = index % (h * w)
    ys, xs = (cells // w).float(), (cells % w).float()
    size = outputs["size"].float().flatten(2).gather(2, cells[:, None, :].expand(-1, 2, -1))
    offset = outputs["offset"].float().flatten(2).gather(2, cells[:, None, :].expand(-1, 2, -1))
    cx, cy = (xs + offset[:, 0]) * stride, (ys + offset[:, 1]) * stride
    bw, bh = size[:, 0].clamp(min=0) * stride, size[:, 1].clamp(min=0) * stride
    height, width = image_size
    boxes = torch.stack(
        [
            (cx - bw / 2).clamp(0, width),
            (cy - bh / 2).clamp(0, height),
            (cx + bw / 2).clamp(0, width),
            (cy + bh / 2).clamp(0, height),
        ],
        dim=-1,
    )
    results = []
    for i in range(n):
        keep = scores[i] >= score_threshold
        results.append({"boxes": boxes[i][keep], "scores": scores[i][keep], "labels": labels[i][keep]})
    return results

"""The evaluation's layout predictor: modalities -> a dense layout (segmentation logits or a saliency mask).

Trained on the real data only, it reads a generated sample as it reads a real one, so "does the sample follow
its planned map" becomes "does the net find the planned map in it" (the paper's protocol for the dense tasks).
The backbone is the evaluation detector's (diffx/models/detector.py); a top-down path returns to 1/2 and a
bilinear upsampling to the full frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from diffx.models.detector import ResidualBlock, downsample


class LayoutNet(ModelMixin, ConfigMixin):
    """``outputs`` channels: one logit per segmentation class, or one saliency logit."""

    config_name = "config.json"
    multiple = 8  # inputs are padded to a multiple of this

    @register_to_config
    def __init__(
        self,
        in_channels: int = 5,
        outputs: int = 1,
        width: int = 16,
        inputs: tuple[str, ...] = (),
        layout_kind: str = "saliency",
    ):
        super().__init__()
        w = width
        self.stage2 = nn.Sequential(downsample(in_channels, w), ResidualBlock(w))
        self.stage4 = nn.Sequential(downsample(w, 2 * w), ResidualBlock(2 * w))
        self.stage8 = nn.Sequential(downsample(2 * w, 4 * w), ResidualBlock(4 * w))
        self.lateral4 = nn.Conv2d(2 * w, 4 * w, 1)
        self.lateral2 = nn.Conv2d(w, 4 * w, 1)
        self.head = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * w, outputs, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        x = F.pad(x, (0, pad_w, 0, pad_h))
        c2 = self.stage2(x)
        c4 = self.stage4(c2)
        c8 = self.stage8(c4)
        p4 = self.lateral4(c4) + F.interpolate(c8, size=c4.shape[-2:], mode="nearest")
        p2 = self.lateral2(c2) + F.interpolate(p4, size=c2.shape[-2:], mode="nearest")
        logits = F.interpolate(self.head(p2), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

"""LPIPS-VGG (Zhang et al. 2018), the perceptual term of the paper's MP-VAE loss and its LPIPS metric.

Defined here in plain torch so it needs neither torchvision (the pinned CPU torch has none) nor a download: the
VGG16 trunk reads torchvision's VGG16 checkpoint (``vgg16-397923af.pth``, keys ``features.<i>.weight``) and
the five linear heads read the ``lpips`` package's ``weights/v0.1/vgg.pth`` (keys ``lin<k>.model.1.weight``),
both from local files through the weights-only reader. The layer indices follow torchvision's ``vgg16().features``
so its keys load unchanged; the taps, input scaling and unit normalisation follow ``lpips.LPIPS(net="vgg")``
(version 0.1), which tests/test_lpips.py checks against numbers the reference package computed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from diffx.errors import ConfigError
from diffx.models.weights import load_checked, read_weights

if TYPE_CHECKING:
    from diffx.config import LpipsConfig

# torchvision's VGG16 "D" configuration: convolution widths, "M" = 2x2 max pool.
VGG16_LAYERS: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
)
# LPIPS reads the ReLU after conv1_2, conv2_2, conv3_3, conv4_3 and conv5_3: indices in ``features``.
TAPS = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer: inputs in [-1, 1] moved to ImageNet statistics.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return nn.Sequential(*layers[: TAPS[-1] + 1])  # nothing after relu5_3 is used


class LPIPS(nn.Module):
    """Distance per image pair in [-1, 1] RGB; 1-channel images are repeated to 3 channels first."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"LPIPS compares images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if a.shape[1] == 1:
            a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
        # one pass over both images: the trunk is most of the cost and batches well
        taps = self._taps(torch.cat([a, b]))
        n = a.shape[0]
        total = torch.zeros(n, device=a.device, dtype=a.dtype)
        for lin, tap in zip(self.lins, taps, strict=True):
            total = total + lin((tap[:n] - tap[n:]).pow(2)).mean(dim=(1, 2, 3))
        return total

    @classmethod
    def from_files(cls, vgg16: str | Path, heads: str | Path) -> LPIPS:
        model = cls()
        trunk = read_weights(vgg16, "VGG16")
        wanted = {k for k in model.features.state_dict()}
        found = {k.removeprefix("features."): v for k, v in trunk.items() if k.startswith("features.")}
        missing = sorted(wanted - set(found))
        if missing:
            raise ConfigError(f"{vgg16}: not a torchvision VGG16 checkpoint (no features.{missing[0]})")
        load_checked(model.features, {k: found[k] for k in wanted}, vgg16)
        lins = read_weights(heads, "LPIPS heads")
        state = {f"{k}.weight": lins.get(f"lin{k}.model.1.weight", lins.get(f"{k}.weight")) for k in range(5)}
        absent = [k for k, v in state.items() if v is None]
        if absent:
            raise ConfigError(f"{heads}: not LPIPS-VGG heads (expected lin0..lin4.model.1.weight)")
        load_checked(model.lins, state, heads)  # type: ignore[arg-type]
        return model


def load_lpips(files: LpipsConfig, device: torch.device | str = "cpu") -> LPIPS | None:
    """The configured LPIPS-VGG on ``device``, or None where ``files`` names no weights (LPIPS is optional)."""
    if not files.configured:
        return None
    return LPIPS.from_files(str(files.vgg16), str(files.heads)).to(device)

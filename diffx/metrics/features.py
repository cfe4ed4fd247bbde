"""Image features for the realism metrics (FID, KID, precision / recall), one modality at a time.

FID is only as meaningful as its features. The paper's numbers use the FID InceptionV3; its weights
cannot be downloaded here, so they are read from a local file (``evaluate.features.inception_weights``) into
the InceptionV3 of diffx/models/inception.py, which matches pytorch-fid's features. The offline default is a
seeded, untrained conv net: Naeem et al. (2020, "Reliable Fidelity and Diversity Metrics for Generative
Models") show random embeddings rank generators sensibly, and they are the same bytes on every machine.
Numbers from different extractors are not comparable; the report always names the one used.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from diffx.config import FeatureConfig
from diffx.errors import ConfigError
from diffx.models.inception import FIDInceptionV3


class RandomConvFeatures(nn.Module):
    """Four strided conv layers with Kaiming-normal weights drawn from ``seed``; mean+max pooled."""

    def __init__(self, dims: int = 256, seed: int = 0):
        super().__init__()
        widths = [3, 32, 64, 128, dims // 2]
        self.layers = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=4, stride=2, padding=1) for a, b in itertools.pairwise(widths)
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers:
                fan_in = layer.in_channels * 16
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                layer.bias.zero_()
        self.num_features = 2 * (dims // 2)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images N x 3 x H x W in [0, 1] -> N x dims."""
        x = (images.float() - 0.5) / 0.25
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def build_extractor(config: FeatureConfig) -> tuple[nn.Module, str]:
    """The configured extractor and the name the report gives it."""
    if config.extractor == "inception":
        if not config.inception_weights:
            raise ConfigError("evaluate.features.inception_weights: a local InceptionV3 weights file is required")
        from pathlib import Path

        if not Path(config.inception_weights).is_file():
            raise ConfigError(f"evaluate.features.inception_weights: {config.inception_weights} does not exist")
        return FIDInceptionV3.from_file(config.inception_weights), "inception-v3-fid (local weights)"
    return RandomConvFeatures(config.dims, config.seed), f"random-conv (dims {config.dims}, seed {config.seed})"


def as_three_channels(images: torch.Tensor) -> torch.Tensor:
    """Grey modalities are repeated to 3 channels, as the paper does for FID on thermal / depth."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def extract(extractor: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """N x C x H x W in [0, 1] -> N x D float64 features."""
    chunks = [
        extractor(as_three_channels(images[i : i + batch_size])).double() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, getattr(extractor, "num_features", 1))

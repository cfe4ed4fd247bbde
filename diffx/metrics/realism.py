"""Realism and diversity of one generated modality against the real one: FID, KID, precision, recall.

Features are extracted once per set (diffx/metrics/features.py) and handed to torchmetrics' FID and KID
through a pass-through module, so the statistics are torchmetrics' own code and the expensive network
runs once. Precision / recall are Kynkäänniemi et al. (2019): a generated sample is "precise" when it
falls inside the k-NN ball of some real sample, a real sample is "recalled" when it falls inside the
ball of some generated one.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


class _Features(nn.Module):
    """Hands precomputed features to torchmetrics unchanged."""

    def __init__(self, dims: int):
        super().__init__()
        self.num_features = dims

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FrechetInceptionDistance(feature=_Features(real.shape[1]), reset_real_features=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int, seed: int = 0) -> tuple[float, float]:
    """Mean and std over subsets; torchmetrics draws the subsets from the global RNG, so it is seeded here."""
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "saves all features in a buffer": they are already in memory here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Features(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        mean, std = metric.compute()
    finally:
        torch.set_rng_state(state)
    return float(mean), float(std)


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    distances = torch.cdist(features, features)
    k = min(k, len(features) - 1)
    return distances.kthvalue(k + 1, dim=1).values  # +1: the sample itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    if len(real) < 2 or len(fake) < 2:
        return float("nan"), float("nan")
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    between = torch.cdist(fake, real)  # fake x real
    precision = (between <= real_radii[None, :]).any(dim=1).double().mean()
    real_to_fake = between.T
    recall = (real_to_fake <= fake_radii[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def realism(
    real: torch.Tensor, fake: torch.Tensor, *, kid_subset_size: int, kid_subsets: int, k: int, seed: int = 0
) -> dict[str, Any]:
    kid_mean, kid_std = kid(real, fake, kid_subset_size, kid_subsets, seed)
    precision, recall = precision_recall(real, fake, k)
    return {
        "fid": round(fid(real, fake), 4),
        "kid": round(kid_mean, 6),
        "kid_std": round(kid_std, 6),
        "precision": None if math.isnan(precision) else round(precision, 4),  # undefined below 2 samples
        "recall": None if math.isnan(recall) else round(recall, 4),
        "real_samples": len(real),
        "generated_samples": len(fake),
    }

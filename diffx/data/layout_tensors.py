"""Dense layouts as tensors: stored PNG values <-> model frames <-> the UNet's input channels.

The kinds and their storage are described in diffx/data/layouts.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from diffx.data.layouts import is_label_map
from diffx.data.spec import DatasetSpec


def stored_to_tensor(array: np.ndarray, spec: DatasetSpec) -> torch.Tensor:
    """H x W uint8 PNG values -> 1 x H x W float: label ids as they are, intensities in [0, 1]."""
    values = torch.tensor(array, dtype=torch.float32)[None]  # a copy: decoded arrays may be read-only
    return values if is_label_map(spec) else values / 255.0


def tensor_to_stored(layout: torch.Tensor, spec: DatasetSpec) -> np.ndarray:
    """Inverse of ``stored_to_tensor``: 1 x H x W -> H x W uint8."""
    values = layout[0].float()
    if not is_label_map(spec):
        values = values.clamp(0, 1) * 255.0
    return values.round().clamp(0, 255).to(torch.uint8).numpy()


def model_input(layouts: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """B x 1 x H x W stored values -> B x C x H x W UNet input (one-hot labels or the intensity)."""
    if not is_label_map(spec):
        return layouts.float()
    ids = layouts[:, 0].long().clamp(0, len(spec.layout_classes) - 1)
    return F.one_hot(ids, len(spec.layout_classes)).permute(0, 3, 1, 2).float()

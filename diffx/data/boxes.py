"""Box geometry shared by the planner and the gates: one definition of overlap."""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_SIDE_PX = 2.0  # a box narrower than this after clipping or cropping is no longer an object


def clip_box(
    box: Sequence[float], width: float, height: float, min_side: float = 0.0
) -> tuple[float, float, float, float] | None:
    """``box`` cut to the frame; None when a side is empty or shorter than ``min_side`` px."""
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])
    w, h = x1 - x0, y1 - y0
    return (x0, y0, x1, y1) if w > 0 and h > 0 and w >= min_side and h >= min_side else None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for degenerate or non-finite ones."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 and math.isfinite(union) else 0.0

"""Box geometry shared by the planner, the gates and refine: one definition of overlap."""

from __future__ import annotations

import math
from collections.abc import Sequence

from diffx.data.sample import BoxObject


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for degenerate or non-finite ones."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 and math.isfinite(union) else 0.0


def layout_similarity(a: list[BoxObject], b: list[BoxObject]) -> float:
    """How alike two box layouts are, 0..1: same-class boxes matched greedily by IoU, the summed IoU over the
    larger count. Two frames without boxes are alike (1.0): a fixed camera's empty scenes."""
    if not a and not b:
        return 1.0
    pairs = sorted(
        ((box_iou(x.bbox, y.bbox), i, j) for i, x in enumerate(a) for j, y in enumerate(b) if x.category == y.category),
        reverse=True,
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    total = 0.0
    for iou, i, j in pairs:
        if iou > 0 and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            total += iou
    return total / max(len(a), len(b))

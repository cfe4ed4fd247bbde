"""Class-preserving edits of segmentation layouts, so that a plan is more than flipped copies of the real maps.

One object's region (the pixels of its dominant class inside its box) moves sideways, its box with it; the
pixels it leaves take the background label (value 0, the first of ``data.layout_classes``). An edit that
would erase any class from the map, push the box off the frame or onto another box is not made: the plan's
class counts and the map's class set stay those of the real layout it came from.
"""

from __future__ import annotations

import numpy as np

from diffx.data.boxes import box_iou
from diffx.data.sample import BoxObject

MIN_SHIFT, MAX_SHIFT = 0.1, 0.3  # of the frame width


def _region(labels: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, int] | None:
    """The mask (in box coordinates) of the commonest non-background label inside ``box``, and that label."""
    x0, y0, x1, y1 = box
    patch = labels[y0:y1, x0:x1]
    values, counts = np.unique(patch[patch > 0], return_counts=True)
    if not len(values):
        return None
    label = int(values[int(np.argmax(counts))])
    return patch == label, label


def move_segment(
    labels: np.ndarray, objects: list[BoxObject], rng: np.random.Generator, max_overlap: float
) -> tuple[np.ndarray, list[BoxObject]] | None:
    """A label map with one object's region moved sideways and the boxes to match, or None when no move keeps
    every class. Draws from ``rng`` only here, so layouts without the edit plan exactly as before."""
    if not objects:
        return None
    height, width = labels.shape
    index = int(rng.integers(len(objects)))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    shift = round(sign * rng.uniform(MIN_SHIFT, MAX_SHIFT) * width)
    obj = objects[index]
    limits = (width, height, width, height)
    x0, y0, x1, y1 = (max(0, min(round(v), limit)) for v, limit in zip(obj.bbox, limits, strict=True))
    if x1 <= x0 or y1 <= y0 or not (x0 + shift >= 0 and x1 + shift <= width):
        return None
    found = _region(labels, (x0, y0, x1, y1))
    if found is None:
        return None
    mask, label = found
    moved_box = (obj.bbox[0] + shift, obj.bbox[1], obj.bbox[2] + shift, obj.bbox[3])
    others = [o for i, o in enumerate(objects) if i != index]
    if any(box_iou(moved_box, o.bbox) > max_overlap for o in others):
        return None
    edited = labels.copy()
    edited[y0:y1, x0:x1][mask] = 0
    edited[y0:y1, x0 + shift : x1 + shift][mask] = label
    if set(np.unique(edited).tolist()) != set(np.unique(labels).tolist()):
        return None  # the move covered the last pixels of some class: not class-preserving
    moved = BoxObject(moved_box, obj.category, obj.category_id)  # type: ignore[arg-type]
    return edited, [moved if i == index else o for i, o in enumerate(objects)]

"""The boxes a curated row carries: the plan's, the ones the real-data detector confirms, or its own finds.

A generated image is only a good training sample when its boxes describe it. The plan says where objects
were asked for; the detector trained on real data says where a detector sees them. Boxes are chosen in the
model's frame (where the detector ran) and mapped back to the row's stored frame, so a reader that places
the row again gets them where the detector found them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffx.config import CurateLabelsConfig
from diffx.curate.scores import box_iou, planned_box_hits
from diffx.data.frame import Placement


@dataclass
class RowLabels:
    """One row's boxes (x0 y0 x1 y1) and class ids, and where they came from."""

    boxes: np.ndarray
    labels: np.ndarray
    from_plan: int  # planned boxes kept
    added: int  # boxes only the detector gave


def choose_labels(
    planned: tuple[np.ndarray, np.ndarray],
    found: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: CurateLabelsConfig,
    *,
    score_threshold: float,
    iou: float,
    hit: np.ndarray | None = None,
) -> RowLabels:
    """The row's boxes per ``config.source``, in the frame of ``planned`` and ``found`` (the model's).

    ``hit``: which planned boxes the detector found (:func:`planned_box_hits` with the same threshold and IoU),
    when the caller has it already for its recall score; computed here otherwise."""
    boxes, labels = np.asarray(planned[0], dtype=np.float64).reshape(-1, 4), np.asarray(planned[1], dtype=np.int64)
    found_boxes = np.asarray(found[0], dtype=np.float64).reshape(-1, 4)
    found_scores, found_labels = np.asarray(found[1]), np.asarray(found[2], dtype=np.int64)
    if config.source == "plan":
        return RowLabels(boxes, labels, len(labels), 0)
    if config.source == "detector":
        confident = found_scores >= score_threshold
        return RowLabels(found_boxes[confident], found_labels[confident], 0, int(confident.sum()))
    if hit is None:
        hit = planned_box_hits((boxes, labels), found, score_threshold=score_threshold, iou=iou)
    if config.adopt_score is None:
        return RowLabels(boxes[hit], labels[hit], int(hit.sum()), 0)
    confident = found_scores >= config.adopt_score
    candidates, candidate_labels = found_boxes[confident], found_labels[confident]
    overlap = box_iou(candidates, boxes).max(axis=1) if len(boxes) else np.zeros(len(candidates))
    new = overlap < config.adopt_max_iou
    return RowLabels(
        np.concatenate([boxes[hit], candidates[new]]),
        np.concatenate([labels[hit], candidate_labels[new]]),
        int(hit.sum()),
        int(new.sum()),
    )


def to_stored_frame(chosen: RowLabels, placement: Placement) -> RowLabels:
    """Boxes of the model's frame -> the row's stored frame (the crop offset and the resize undone), clipped to
    it; a box left with no area is dropped (and no longer counted where it came from)."""
    p = placement
    shift = np.array([p.left, p.top, p.left, p.top], dtype=np.float64)
    scale = np.array([p.scale_x, p.scale_y, p.scale_x, p.scale_y], dtype=np.float64)
    width, height = p.resized[1] / p.scale_x, p.resized[0] / p.scale_y  # the stored frame's size
    stored = np.clip((chosen.boxes + shift) / scale, 0, [width, height, width, height])
    area = (stored[:, 2] - stored[:, 0]) * (stored[:, 3] - stored[:, 1])
    keep = area > 0
    planned_kept = int(keep[: chosen.from_plan].sum())
    return RowLabels(stored[keep], chosen.labels[keep], planned_kept, int(keep.sum()) - planned_kept)

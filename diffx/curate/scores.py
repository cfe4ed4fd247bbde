"""Per-sample scores of a generated set: does each planned object appear where the plan put it, does the
sample look like the real data, are its modalities registered.

Layout agreement is the real-data detector's recall of the planned boxes (a same-class find above a
confidence, at IoU >= 0.5): a sample whose objects sit elsewhere teaches a detector wrong labels. The
outlier score is the distance to the k-th nearest real sample in the evaluation's feature space, over the
real set's own median k-NN radius (1 = as typical as a real sample; per modality, then the mean).
"""

from __future__ import annotations

import numpy as np
import torch


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4, x0 y0 x1 y1) with every box in ``b`` (M x 4): N x M."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    overlap = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return overlap / np.maximum(area_a[:, None] + area_b[None, :] - overlap, 1e-9)


def planned_box_hits(
    planned: tuple[np.ndarray, np.ndarray],
    found: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    score_threshold: float,
    iou: float,
) -> np.ndarray:
    """Per planned box: was it found (same class, score >= threshold, IoU >= ``iou``; each find used once)."""
    boxes, labels = planned
    found_boxes, found_scores, found_labels = found
    confident = found_scores >= score_threshold
    found_boxes, found_labels, found_scores = found_boxes[confident], found_labels[confident], found_scores[confident]
    order = np.argsort(-found_scores, kind="stable")
    overlaps = box_iou(np.asarray(boxes, dtype=np.float64), np.asarray(found_boxes, dtype=np.float64))
    hit = np.zeros(len(boxes), dtype=bool)
    for j in order:  # greedy by confidence, as COCO matching
        candidates = [i for i in range(len(boxes)) if not hit[i] and labels[i] == found_labels[j]]
        if not candidates:
            continue
        best = max(candidates, key=lambda i: overlaps[i, j])
        if overlaps[best, j] >= iou:
            hit[best] = True
    return hit


def outlier_ratio(reference: torch.Tensor, samples: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's distance to its k-th nearest reference feature over the reference's median k-NN radius."""
    k_ref = min(k, len(reference) - 1)
    if k_ref < 1:
        raise ValueError(f"the reference set has {len(reference)} samples; an outlier score needs at least 2")
    radii = torch.cdist(reference, reference).kthvalue(k_ref + 1, dim=1).values  # +1: itself at distance 0
    to_ref = torch.cdist(samples, reference).kthvalue(min(k, len(reference)), dim=1).values
    return to_ref / radii.median().clamp_min(1e-12)

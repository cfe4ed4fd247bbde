"""Detection metrics through pycocotools, so the numbers mean what detector teams expect them to mean.

Ground truth and detections are built in memory (boxes in pixels, x0 y0 x1 y1 -> COCO's x y w h); the
result is mAP@0.5, mAP@0.5:0.95, AP@0.5 per class and per object size, and the precision-recall curve at
IoU 0.5 (averaged over classes) for ``dvc plots``. pycocotools prints its tables; that chatter is swallowed.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SIZES = ("small", "medium", "large")


@dataclass
class DetectionScores:
    map50: float
    map50_95: float
    per_class_ap50: dict[str, float | None]
    recall_points: list[float] = field(default_factory=list)
    precision_at_recall: list[float] = field(default_factory=list)
    images: int = 0
    objects: int = 0
    ap50_by_size: dict[str, float | None] = field(default_factory=dict)  # small / medium / large; None: no object

    def summary(self) -> dict[str, Any]:
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "ap50_per_class": self.per_class_ap50,
            "ap50_by_size": self.ap50_by_size,
            "images": self.images,
            "objects": self.objects,
        }


def _xywh(box: Any) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]


def coco_scores(
    ground_truth: list[tuple[np.ndarray, np.ndarray]],
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: list[str],
    image_size: tuple[int, int],
    size_edges: tuple[float, float] = (32.0, 96.0),
) -> DetectionScores:
    """``ground_truth[i]`` = (boxes, labels) and ``detections[i]`` = (boxes, scores, labels) of image i.

    ``size_edges``: the sides (sqrt of box area, px) that part small, medium and large objects for AP@0.5 by
    size (COCO's are 32 and 96 px; a small frame wants its own)."""
    height, width = image_size
    gt: dict[str, Any] = {
        "images": [{"id": i + 1, "width": width, "height": height} for i in range(len(ground_truth))],
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(classes)],
        "annotations": [],
    }
    for i, (boxes, labels) in enumerate(ground_truth):
        for box, label in zip(boxes.reshape(-1, 4), labels.reshape(-1), strict=True):
            xywh = _xywh(box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    results = [
        {"image_id": i + 1, "category_id": int(label) + 1, "bbox": _xywh(box), "score": round(float(score), 6)}
        for i, (boxes, scores, labels) in enumerate(detections)
        for box, score, label in zip(boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1), strict=True)
    ]
    objects = len(gt["annotations"])
    if not results or not objects:
        return DetectionScores(
            0.0,
            0.0,
            dict.fromkeys(classes, 0.0),
            images=len(ground_truth),
            objects=objects,
            ap50_by_size=dict.fromkeys(SIZES),
        )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = [1, 10, 100]
        small, large = (edge**2 for edge in size_edges)
        evaluator.params.areaRng = [[0.0, 1e10], [0.0, small], [small, large], [large, 1e10]]  # "all" first, as COCO
        evaluator.params.areaRngLbl = ["all", *SIZES]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # T x R x K x A x M; -1 where a class has no ground truth
    at50 = precision[0, :, :, 0, -1]  # IoU 0.5, every recall point, every class, all areas, 100 detections
    per_class = {name: _average_precision(at50[:, c]) for c, name in enumerate(classes)}
    by_size = {name: _average_precision(precision[0, :, :, a, -1]) for a, name in enumerate(SIZES, start=1)}
    valid = np.where(at50 > -1, at50, np.nan)
    with np.errstate(all="ignore"):
        curve = np.nanmean(valid, axis=1)
    return DetectionScores(
        map50=round(max(float(evaluator.stats[1]), 0.0), 4),
        map50_95=round(max(float(evaluator.stats[0]), 0.0), 4),
        per_class_ap50=per_class,
        recall_points=[round(float(r), 2) for r in evaluator.params.recThrs],
        precision_at_recall=[round(float(p), 4) if np.isfinite(p) else 0.0 for p in curve],
        images=len(ground_truth),
        objects=objects,
        ap50_by_size=by_size,
    )


def _average_precision(precision: np.ndarray) -> float | None:
    """COCO's average over the recall points (and classes) that have ground truth; None where none has."""
    valid = precision[precision > -1]
    return round(float(valid.mean()), 4) if valid.size else None

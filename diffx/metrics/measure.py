"""One decode of an image set feeds every measurement made on it.

The evaluation looks at the generated set five ways: its features and RGB/X alignment, the same for the
misaligned control, the real-data detector's finds on both, and a sample sheet. Decoding PNGs is the costly
part on a CPU, so each batch is decoded once and handed to every view of the set: a view is the images as
stored or through a transform (the control's shift), with the detectors that score it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffx.config import EvaluateConfig
from diffx.data.frame import Placement
from diffx.errors import DataError
from diffx.metrics.alignment import pair_scores, summarize
from diffx.metrics.coco_map import DetectionScores, coco_scores
from diffx.metrics.features import extract
from diffx.models.detector import CenterNet, decode, stack_inputs
from diffx.progress import Progress
from diffx.shards.dataset import ShardDataset, detection_collate

Transform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass
class ImageSet:
    """Features per modality and the edge alignment of every RGB/X pair of one view."""

    name: str
    features: dict[str, torch.Tensor]
    edge_correlation: dict[str, torch.Tensor]
    best_shift: dict[str, torch.Tensor]

    def alignment(self) -> dict[str, Any]:
        return {name: summarize(scores, self.best_shift[name]) for name, scores in self.edge_correlation.items()}


@dataclass
class View:
    """A way of looking at a set: its images as stored (or through ``transform``), scored by ``detectors``."""

    name: str
    transform: Transform | None = None
    detectors: dict[str, CenterNet] = field(default_factory=dict)


@dataclass
class _Collected:
    features: dict[str, list[torch.Tensor]]
    zero: dict[str, list[torch.Tensor]]
    shifts: dict[str, list[torch.Tensor]]
    found: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclass
class Measured:
    sets: dict[str, ImageSet]  # by view name
    scores: dict[tuple[str, str], DetectionScores]  # by (view name, detector name)
    first_batch: dict[str, Any] | None  # the set's first rows as decoded, for a sample sheet
    ids: list[str] = field(default_factory=list)  # row ids, in the order of every per-sample list here
    truth: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (boxes, labels) per row
    found: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    placements: list[Placement] = field(default_factory=list)  # where each stored row landed in the model's frame


@torch.no_grad()
def _detections(model: CenterNet, images: dict[str, torch.Tensor], options: EvaluateConfig) -> list[tuple]:
    model.eval()
    device = next(model.parameters()).device
    size = tuple(next(iter(images.values())).shape[-2:])
    out = model(stack_inputs(images, list(model.config.inputs)).to(device))
    detections = decode(
        out,
        size,  # type: ignore[arg-type]
        max_detections=options.detector.max_detections,
        score_threshold=options.detector.score_threshold,
    )
    return [(d["boxes"].cpu().numpy(), d["scores"].cpu().numpy(), d["labels"].cpu().numpy()) for d in detections]


def measure_set(
    dataset: ShardDataset,
    views: list[View],
    extractor: torch.nn.Module | None,
    options: EvaluateConfig,
    *,
    keep_first: int = 0,
    progress: bool = False,
) -> Measured:
    """Decode ``dataset`` once; every view gets every batch. ``keep_first`` rows are kept as decoded.

    ``extractor=None`` measures the detectors' finds only: no features and no RGB/X alignment, the two costs a
    caller that reads only detections (curate's recall on real frames) would otherwise pay and throw away."""
    size = len(dataset)
    if size == 0:
        raise DataError(dataset.root, f"split {dataset.split!r} has no rows to evaluate")
    modalities = list(dataset.modalities)
    featured = modalities if extractor is not None else []
    others = [m for m in featured if m != "rgb"] if "rgb" in featured else []
    collected = {
        v.name: _Collected(
            {m: [] for m in featured}, {m: [] for m in others}, {m: [] for m in others}, {d: [] for d in v.detectors}
        )
        for v in views
    }
    truth: list[tuple[np.ndarray, np.ndarray]] = []
    ids: list[str] = []
    placements: list[Placement] = []
    frame = (0, 0)
    kept: list[dict[str, Any]] = []
    batch_size = options.features.batch_size
    label = f"measure {'/'.join(v.name for v in views)}"
    with Progress(label, size, unit="images", bar=progress) as bar:
        for start in range(0, size, batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, size))]
            kept += rows[: keep_first - len(kept)]
            batch = detection_collate(rows)
            ids += [row["id"] for row in rows]
            placements += [row["placement"] for row in rows]
            truth += [(b.numpy(), lab.numpy()) for b, lab in zip(batch["boxes"], batch["labels"], strict=True)]
            for view in views:
                images = view.transform(batch["images"]) if view.transform else batch["images"]
                frame = tuple(next(iter(images.values())).shape[-2:])  # type: ignore[assignment]
                into = collected[view.name]
                if extractor is not None:
                    for modality, value in images.items():
                        into.features[modality].append(extract(extractor, value, batch_size))
                for modality in others:
                    zero, shift = pair_scores(images["rgb"], images[modality], options.align_max_shift)
                    into.zero[modality].append(zero)
                    into.shifts[modality].append(shift)
                for name, model in view.detectors.items():
                    into.found[name] += _detections(model, images, options)
            bar.update(len(batch["boxes"]))
    sets, scores = {}, {}
    for view in views:
        got = collected[view.name]
        sets[view.name] = ImageSet(
            view.name,
            features={m: torch.cat(v) for m, v in got.features.items()},
            edge_correlation={m: torch.cat(v) for m, v in got.zero.items()},
            best_shift={m: torch.cat(v) for m, v in got.shifts.items()},
        )
        for name, model in view.detectors.items():
            classes = list(model.config.classes)
            scores[(view.name, name)] = coco_scores(truth, got.found[name], classes, frame, options.size_edges_px)
    found = {(v.name, d): collected[v.name].found[d] for v in views for d in v.detectors}
    return Measured(sets, scores, detection_collate(kept) if kept else None, ids, truth, found, placements)

"""Stage ``curate``: score every generated sample, keep the ones a detector should learn from.

The scores come from the evaluation's own instruments (diffx/eval): its real-data detector (trained here
with the evaluation's settings and first seed, saved, and reused by ``evaluate``), its feature extractor
and its RGB-X edge alignment, so a kept sample is one the evaluation would call faithful. Outputs: a
Parquet table of every sample's scores, carried boxes and verdict next to the shards, the kept rows as
their own shard set (a manifest like any other: every reader honours it without knowing about curation),
byte for byte but for their boxes, which ``curate.labels`` chooses (unchanged with ``plan``), and a report.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.config import CurateConfig, DiffxConfig, EvaluateConfig, section_hash
from diffx.curate.labels import RowLabels, choose_labels, to_stored_frame
from diffx.curate.scores import outlier_ratio, planned_box_hits
from diffx.curate.select import SampleScore, main_class, select
from diffx.data.sample import Sample, make_object
from diffx.data.spec import require_compatible
from diffx.errors import DataError
from diffx.eval.detectors import real_detector, split_digest
from diffx.metrics.features import build_extractor
from diffx.metrics.measure import View, measure_set
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages.guard import guard
from diffx.train.distributed import init_distributed

log = logging.getLogger(__name__)


def run(config: DiffxConfig, *, progress: bool = True) -> CurateResult:
    guard("curate", config)
    return curate(config.curate, config.evaluate, progress=progress)


@dataclass
class CurateResult:
    scores: list[SampleScore]
    report: dict[str, Any]
    seconds: dict[str, float]


def _write_scores(
    path: str,
    scores: list[SampleScore],
    per_class: list[dict[str, tuple[int, int]]],
    labels: list[RowLabels],
    classes: list[str],
) -> None:
    """One row per sample: its scores, verdict and reason, (planned, found) boxes per class, and the boxes a
    kept row carries with where each came from (the record of every label curate changed)."""
    rows = [
        {
            **asdict(s),
            "per_class": [{"class": c, "planned": p, "found": f} for c, (p, f) in table.items()],
            "boxes_from_plan": chosen.from_plan,
            "boxes_added": chosen.added,
            "boxes": [
                {
                    "bbox": [round(float(v), 3) for v in box],
                    "category": classes[int(c)],
                    "from_plan": i < chosen.from_plan,
                }
                for i, (box, c) in enumerate(zip(chosen.boxes, chosen.labels, strict=True))
            ],
        }
        for s, table, chosen in zip(scores, per_class, labels, strict=True)
    ]
    table = pa.Table.from_pylist(rows)
    fs, target = fsio.get_fs(path)
    with fsio.atomic_open(fs, target, "wb") as out:
        pq.write_table(table, out)


def _write_curated(
    options: CurateConfig, source: ShardSet, kept: dict[str, RowLabels], params_hash: str
) -> dict[str, RowLabels]:
    """The kept rows of every shard, in order, as a new shard set (empty shards are left out); every field
    byte for byte but the boxes, which are ``kept[id]``'s (with ``plan`` labels the row's own, untouched: a
    box the model's crop cuts stays as stored). Returns the boxes each written row carries."""
    spec = source.spec
    plan = options.labels.source == "plan"
    written: dict[str, RowLabels] = {}

    def relabelled(sample: Sample) -> Sample:
        if plan:
            objects = sample.objects
        else:
            chosen = kept[sample.id]
            objects = [
                make_object(box.tolist(), spec.classes[int(c)], spec)
                for box, c in zip(chosen.boxes, chosen.labels, strict=True)
            ]
        boxes = np.array([o.bbox for o in objects], dtype=np.float64).reshape(-1, 4)
        labels = np.array([o.category_id for o in objects], dtype=np.int64)
        from_plan = len(objects) if plan else kept[sample.id].from_plan
        written[sample.id] = RowLabels(boxes, labels, from_plan, len(objects) - from_plan)
        return sample if plan else replace(sample, objects=objects)

    with fsio.staged_folder(options.output) as staging:  # a failed run keeps the previous curated set
        writer = ShardSetWriter(staging, spec, generated=True, params_hash=params_hash)
        records = []
        for record in source.manifest.shards_of(options.split):
            rows = [relabelled(s) for s in source.iter_samples_of(record) if s.id in kept]
            if rows:
                records.append(writer.write_shard(options.split, len(records), rows, plan_key=record.plan_key))
        writer.finalize(records)
    return written


def curate(options: CurateConfig, evaluation: EvaluateConfig, *, progress: bool = True) -> CurateResult:
    started = time.perf_counter()
    spec = ShardSet(evaluation.real).spec
    source = ShardSet(options.synthetic)
    require_compatible(source.spec, spec, found_in=f"{options.synthetic}/_manifest.json", needed_by="curate")
    modalities = list(spec.modality_names)
    reference = ShardDataset(evaluation.real, evaluation.reference_split, modalities)
    synthetic = ShardDataset(options.synthetic, options.split, modalities)
    if len(synthetic) == 0:
        raise DataError(options.synthetic, f"split {options.split!r} has no rows to curate")
    seconds: dict[str, float] = {}

    ctx = init_distributed(evaluation.device)
    seed = evaluation.detector_seeds[0]
    detector, _, key, _ = real_detector(  # shared with evaluate: see diffx/eval/detectors.py
        "real",
        reference,
        evaluation,
        spec,
        seed,
        split_digest(evaluation.real, evaluation.reference_split),
        saved=options.detector,
        ctx=ctx,
        save_to=options.detector,
        checkpoints=options.checkpoints,
        progress=progress,
    )
    seconds["detector"] = time.perf_counter() - started

    started = time.perf_counter()
    extractor, extractor_name = build_extractor(evaluation.features)
    real = measure_set(reference, [View("reference")], extractor, evaluation, progress=progress)
    generated = measure_set(
        synthetic, [View("generated", None, {"real": detector})], extractor, evaluation, progress=progress
    )
    seconds["measure"] = time.perf_counter() - started

    features = generated.sets["generated"].features
    outlier = sum(
        outlier_ratio(real.sets["reference"].features[m], features[m], evaluation.nearest_k) for m in modalities
    ) / len(modalities)
    shifts = generated.sets["generated"].best_shift
    max_shift = (
        np.max(np.stack([shifts[m].abs().amax(dim=1).numpy() for m in shifts]), axis=0)
        if shifts
        else np.zeros(len(generated.ids), dtype=np.int64)
    )
    classes = list(spec.classes)
    scores, per_class, new_labels = [], [], []
    for i, row_id in enumerate(generated.ids):
        boxes, labels = generated.truth[i]
        found = generated.found[("generated", "real")][i]
        hit = planned_box_hits((boxes, labels), found, score_threshold=options.score_threshold, iou=options.iou)
        chosen = choose_labels(
            (boxes, labels), found, options.labels, score_threshold=options.score_threshold, iou=options.iou, hit=hit
        )
        new_labels.append(to_stored_frame(chosen, generated.placements[i]))
        ids = [int(c) for c in labels.tolist()]
        per_class.append(_class_table(ids, hit, classes))
        scores.append(
            SampleScore(
                id=row_id,
                group=main_class(ids, classes),
                planned=len(ids),
                hits=int(hit.sum()),
                recall=round(float(hit.mean()), 4) if len(ids) else None,
                outlier=round(float(outlier[i]), 4),
                max_shift_px=int(max_shift[i]),
            )
        )
    select(scores, options.rules)
    started = time.perf_counter()
    real_test = _real_recall(
        ShardDataset(evaluation.real, evaluation.test_split, modalities), detector, options, evaluation
    )
    seconds["real_test"] = time.perf_counter() - started
    kept = {s.id: chosen for s, chosen in zip(scores, new_labels, strict=True) if s.kept}

    started = time.perf_counter()
    params_hash = section_hash(options, extra={"detector": key, "synthetic": split_digest(source, options.split)})
    carried = _write_curated(options, source, kept, params_hash)
    written = len(carried)
    # kept rows: the boxes written; dropped ones: the boxes they would have carried
    recorded = [carried.get(s.id, chosen) for s, chosen in zip(scores, new_labels, strict=True)]
    _write_scores(options.scores, scores, per_class, recorded, classes)
    seconds["write"] = time.perf_counter() - started

    kept_scores = [s for s in scores if s.kept]
    kept_tables = [t for s, t in zip(scores, per_class, strict=True) if s.kept]
    kept_labels = list(carried.values())
    groups = sorted({s.group for s in scores})
    report = {
        "samples": len(scores),
        "kept": written,
        "groups": {
            g: {"samples": sum(s.group == g for s in scores), "kept": sum(s.group == g and s.kept for s in scores)}
            for g in groups
        },
        "box_recall": {
            "all": _table_recall(per_class),
            "kept": _table_recall(kept_tables),
        },
        "box_recall_per_class": {
            c: {
                "all": _class_recall(per_class, c),
                "kept": _class_recall(kept_tables, c),
            }
            for c in classes
        },
        # the same detector on real frames it never trained on: what a planned-box recall can be read against
        "box_recall_real_test": real_test,
        "outlier_median": {
            "all": round(float(np.median([s.outlier for s in scores])), 4),
            "kept": round(float(np.median([s.outlier for s in kept_scores])), 4) if kept_scores else None,
        },
        "registered_share": round(float(np.mean([s.max_shift_px <= 1 for s in scores])), 4),
        "labels": {
            "source": options.labels.source,
            "planned": sum(s.planned for s in kept_scores),  # boxes the kept rows were generated from
            "from_plan": sum(c.from_plan for c in kept_labels),
            "added": sum(c.added for c in kept_labels),
            "per_class": {
                c: int(sum((chosen.labels == k).sum() for chosen in kept_labels)) for k, c in enumerate(classes)
            },
        },
        "rules": options.rules.model_dump(mode="json"),
        "feature_extractor": extractor_name,
        "detector": {"run_key": key, "seed": seed},
    }  # no timings: the report is tracked in git and must not change between identical runs
    fsio.write_json_atomic(options.report, report)
    shutil.rmtree(options.checkpoints, ignore_errors=True)  # spent: the detector is saved
    log.info(
        "curate: kept %d of %d samples; planned-box recall %s -> %s (the detector on real test frames: %s); "
        "boxes (%s): %d of %d planned kept, %d added (%s)",
        written,
        len(scores),
        report["box_recall"]["all"],
        report["box_recall"]["kept"],
        real_test["all"],
        options.labels.source,
        report["labels"]["from_plan"],
        report["labels"]["planned"],
        report["labels"]["added"],
        ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
    )
    return CurateResult(scores, report, seconds)


def _class_recall(tables: list[dict[str, tuple[int, int]]], name: str) -> float | None:
    """Share of the planned boxes of class ``name`` the detector found, over per-sample (planned, hits) tables."""
    planned = sum(t[name][0] for t in tables if name in t)
    found = sum(t[name][1] for t in tables if name in t)
    return round(found / planned, 4) if planned else None


def _table_recall(tables: list[dict[str, tuple[int, int]]]) -> float | None:
    """Share of all the boxes the detector found, over the same per-sample tables (every class together)."""
    planned = sum(n for t in tables for n, _ in t.values())
    found = sum(f for t in tables for _, f in t.values())
    return round(found / planned, 4) if planned else None


def _class_table(ids: list[int], hit: np.ndarray, classes: list[str]) -> dict[str, tuple[int, int]]:
    """(boxes, found) per class of one row."""
    hits = Counter(classes[c] for c, h in zip(ids, hit, strict=True) if h)
    boxes = Counter(classes[c] for c in ids)
    return {name: (n, hits.get(name, 0)) for name, n in sorted(boxes.items())}


def _real_recall(
    test: ShardDataset, detector: Any, options: CurateConfig, evaluation: EvaluateConfig
) -> dict[str, Any]:
    """The real-data detector's recall of the true boxes of the real test frames, at curate's confidence and IoU.
    A generated sample cannot be found more reliably than a real frame is: "curate finds 35 % of the planned
    boxes" means little until it is set beside what the same detector finds on real frames (only reported;
    nothing is selected by it)."""
    measured = measure_set(test, [View("real_test", None, {"real": detector})], None, evaluation)  # finds only
    classes = list(test.spec.classes)
    tables = []
    for (boxes, labels), found in zip(measured.truth, measured.found[("real_test", "real")], strict=True):
        hit = planned_box_hits((boxes, labels), found, score_threshold=options.score_threshold, iou=options.iou)
        tables.append(_class_table([int(c) for c in labels.tolist()], hit, classes))
    return {"all": _table_recall(tables), "per_class": {c: _class_recall(tables, c) for c in classes}}

"""Stage ``curate``: score every generated sample, keep the ones a detector should learn from.

The scores come from the evaluation's own instruments (diffx/eval): its real-data detector (trained here
with the evaluation's settings and first seed, saved, and reused by ``evaluate``), its feature extractor
and its RGB-X edge alignment, so a kept sample is one the evaluation would call faithful. Outputs: a
Parquet table of every sample's scores and verdict next to the shards, the kept rows byte for byte as
their own shard set (a manifest like any other: every reader honours it without knowing about curation),
and a report.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.config import CurateConfig, EvaluateConfig, section_hash
from diffx.curate.scores import outlier_ratio, planned_box_hits
from diffx.curate.select import SampleScore, main_class, select
from diffx.data.spec import require_compatible
from diffx.errors import DataError
from diffx.eval.detectors import load_saved, real_detector_key, seeded, split_digest, train_detector
from diffx.eval.features import build_extractor
from diffx.eval.measure import View, measure_set
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.train.distributed import init_distributed

log = logging.getLogger(__name__)


@dataclass
class CurateResult:
    scores: list[SampleScore]
    report: dict[str, Any]
    seconds: dict[str, float]


def _box_recall(scores: list[SampleScore]) -> float | None:
    planned = sum(s.planned for s in scores)
    return round(sum(s.hits for s in scores) / planned, 4) if planned else None


def _write_scores(path: str, scores: list[SampleScore], per_class: list[dict[str, tuple[int, int]]]) -> None:
    """One row per sample: its scores, verdict and reason, and (planned, found) boxes per class."""
    rows = [
        {**asdict(s), "per_class": [{"class": c, "planned": p, "found": f} for c, (p, f) in table.items()]}
        for s, table in zip(scores, per_class, strict=True)
    ]
    table = pa.Table.from_pylist(rows)
    fs, target = fsio.get_fs(path)
    with fsio.atomic_open(fs, target, "wb") as out:
        pq.write_table(table, out)


def _write_curated(options: CurateConfig, source: ShardSet, kept: set[str], params_hash: str) -> int:
    """The kept rows of every shard, in order, as a new shard set (empty shards are left out)."""
    written = 0
    with fsio.staged_folder(options.output) as staging:  # a failed run keeps the previous curated set
        writer = ShardSetWriter(staging, source.spec, generated=True, params_hash=params_hash)
        records = []
        for record in source.manifest.shards_of(options.split):
            rows = [s for s in source.iter_samples_of(record) if s.id in kept]
            if rows:
                records.append(writer.write_shard(options.split, len(records), rows, plan_key=record.plan_key))
                written += len(rows)
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

    seed = evaluation.detector_seeds[0]
    key = real_detector_key(evaluation, spec, seed)
    device = init_distributed(evaluation.device).device
    saved = load_saved(options.detector, key, evaluation, spec, device)
    if saved is not None:
        detector = saved[0]
    else:
        detector, _ = train_detector(
            "real",
            reference,
            evaluation,
            spec,
            key,
            train=seeded(evaluation.detector_train, seed),
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
    scores, per_class = [], []
    for i, row_id in enumerate(generated.ids):
        boxes, labels = generated.truth[i]
        hit = planned_box_hits(
            (boxes, labels),
            generated.found[("generated", "real")][i],
            score_threshold=options.score_threshold,
            iou=options.iou,
        )
        ids = [int(c) for c in labels.tolist()]
        hits = Counter(classes[c] for c, h in zip(ids, hit, strict=True) if h)
        planned = Counter(classes[c] for c in ids)
        per_class.append({name: (n, hits.get(name, 0)) for name, n in sorted(planned.items())})
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
    kept = {s.id for s in scores if s.kept}

    started = time.perf_counter()
    params_hash = section_hash(
        options, extra={"detector": key, "synthetic": split_digest(options.synthetic, options.split)}
    )
    written = _write_curated(options, source, kept, params_hash)
    _write_scores(options.scores, scores, per_class)
    seconds["write"] = time.perf_counter() - started

    kept_scores = [s for s in scores if s.kept]
    groups = sorted({s.group for s in scores})
    report = {
        "samples": len(scores),
        "kept": written,
        "groups": {
            g: {"samples": sum(s.group == g for s in scores), "kept": sum(s.group == g and s.kept for s in scores)}
            for g in groups
        },
        "box_recall": {"all": _box_recall(scores), "kept": _box_recall(kept_scores)},
        "box_recall_per_class": {
            c: {
                "all": _class_recall(per_class, c),
                "kept": _class_recall([t for s, t in zip(scores, per_class, strict=True) if s.kept], c),
            }
            for c in classes
        },
        "outlier_median": {
            "all": round(float(np.median([s.outlier for s in scores])), 4),
            "kept": round(float(np.median([s.outlier for s in kept_scores])), 4) if kept_scores else None,
        },
        "registered_share": round(float(np.mean([s.max_shift_px <= 1 for s in scores])), 4),
        "rules": options.rules.model_dump(mode="json"),
        "feature_extractor": extractor_name,
        "detector": {"run_key": key, "seed": seed},
    }  # no timings: the report is tracked in git and must not change between identical runs
    fsio.write_json_atomic(options.report, report)
    shutil.rmtree(options.checkpoints, ignore_errors=True)  # spent: the detector is saved
    log.info(
        "curate: kept %d of %d samples; planned-box recall %s -> %s (%s)",
        written,
        len(scores),
        report["box_recall"]["all"],
        report["box_recall"]["kept"],
        ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
    )
    return CurateResult(scores, report, seconds)


def _class_recall(tables: list[dict[str, tuple[int, int]]], name: str) -> float | None:
    """Share of the planned boxes of class ``name`` the detector found, over per-sample (planned, hits) tables."""
    planned = sum(t[name][0] for t in tables if name in t)
    found = sum(t[name][1] for t in tables if name in t)
    return round(found / planned, 4) if planned else None

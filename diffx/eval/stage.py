"""Stage ``evaluate``: does the synthetic data look right, follow its layout, and make detectors better?

Two detectors are trained with the same seed and steps (real; real + synthetic); then one decode of each
image set feeds every measurement made on it (diffx/eval/measure.py: features per modality, edge alignment
of every RGB/X pair, each detector's finds, scored with pycocotools). A control set (the generated set with
RGB and X shifted apart and off their layout) runs through the same measurements: if it does not score
worse, the metrics cannot see misalignment and the numbers above it mean little. Data with a dense layout
adds its layout agreement (diffx/eval/dense.py: mIoU, S-measure / MAE or edge SSIM) on the same three sets. Outputs:
``metrics/eval.json`` for ``dvc metrics``, CSV curves for ``dvc plots``, a sample sheet, and the trained
models (safetensors).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from diffx import fsio
from diffx.config import EvaluateConfig, section_hash
from diffx.data.spec import DatasetSpec, require_compatible
from diffx.errors import ConfigError
from diffx.eval.alignment import shift_image
from diffx.eval.coco_map import DetectionScores
from diffx.eval.dense import layout_agreement
from diffx.eval.features import build_extractor
from diffx.eval.grids import draw_boxes, grid_png, to_display
from diffx.eval.measure import Transform, View, measure_set
from diffx.eval.paired import paired_scores
from diffx.eval.realism import realism
from diffx.models.detector import CenterNet, decode, stack_inputs
from diffx.models.lpips import load_lpips
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.train.checkpoint import save_model_atomic
from diffx.train.detector import DetectorTrainer, build_detector
from diffx.train.distributed import init_distributed
from diffx.train.loop import write_history_csv

log = logging.getLogger(__name__)


def control_transform(shift: int) -> Transform:
    """The misaligned control: RGB moved by +shift px and every X modality by -shift (both axes)."""

    def apply(images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            name: shift_image(value, shift, shift) if name == "rgb" else shift_image(value, -shift, -shift)
            for name, value in images.items()
        }

    return apply


def _split_digest(root: str, split: str) -> str:
    records = ShardSet(root).manifest.shards_of(split)
    return hashlib.sha256("".join(r.sha256 for r in records).encode()).hexdigest()[:16]


@dataclass
class EvalResult:
    metrics: dict[str, Any]  # every measurement (the report)
    headline: dict[str, Any]  # what ``dvc metrics show`` lists
    seconds: dict[str, float]


def _first(table: dict[str, dict[str, Any]]) -> list[str]:
    return list(next(iter(table.values()), {}))


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader compares between runs, from the full report: a dozen columns, not a hundred.

    Realism and alignment of the generated set per modality, layout fidelity with its real-data ceiling and
    misaligned floor, and the downstream mAP with the gain. Everything else stays in the report.
    """
    generated = report["realism"]["generated"]
    fidelity = report["layout_fidelity"]
    downstream = report["downstream"]
    dense = {}
    if "layout_agreement" in report:  # a dense layout: agreement per set, on the kind's own measure
        agreement = {k: v for k, v in report["layout_agreement"].items() if isinstance(v, dict)}
        dense = {f"layout_agreement_{m}": {name: v[m] for name, v in agreement.items()} for m in _first(agreement)}
    paired = {}
    if "paired" in report:  # one generated sample per real item: its scores per modality
        per_modality = report["paired"]["per_modality"]
        paired = {f"paired_{k}": {m: v[k] for m, v in per_modality.items()} for k in _first(per_modality)}
    return {
        **dense,
        **paired,
        "fid": {m: v["fid"] for m, v in generated.items()},
        "registered_share": {m: v["registered_share"] for m, v in report["alignment"]["generated"].items()},
        "layout_fidelity_map50": {name: s["map50"] for name, s in fidelity.items()},
        "map50": {
            "real": downstream["real"]["map50"],
            "real+synthetic": downstream["real+synthetic"]["map50"],
            "gain": downstream["gain_map50"],
        },
        "map50_95": {
            "real": downstream["real"]["map50_95"],
            "real+synthetic": downstream["real+synthetic"]["map50_95"],
            "gain": downstream["gain_map50_95"],
        },
    }


def _train_detector(
    label: str,
    dataset: Dataset,
    options: EvaluateConfig,
    inputs: list[str],
    spec: DatasetSpec,
    run_key: str,
    progress: bool,
) -> tuple[CenterNet, list[dict[str, float]]]:
    ctx = init_distributed(options.device)
    channels = [spec.modality(m).channels for m in inputs]
    torch.manual_seed(options.detector_train.seed)
    model = build_detector(options.detector, inputs, channels, list(spec.classes))
    trainer = DetectorTrainer(
        model,
        dataset,
        options.detector_train,
        ctx,
        fsio.join(options.checkpoints, label),
        run_key,
        progress=progress,
    )
    trainer.kind = f"detector ({label})"
    log.info(
        "evaluate: training the detector on %s (%d samples, %d steps of %d)",
        label,
        len(dataset),  # type: ignore[arg-type]
        options.detector_train.steps,
        options.detector_train.batch_size,
    )
    trainer.run()
    model.eval()
    save_model_atomic(model, fsio.join(options.output, label))
    return model, trainer.history


PLANNED_COLOUR = (0, 255, 0)
DETECTED_COLOUR = (255, 40, 40)


def sample_sheet(
    batch: dict[str, Any], modalities: list[str], model: CenterNet, options: EvaluateConfig, device: torch.device
) -> bytes:
    """Generated samples: every modality (colour maps), planned boxes green, the real detector's finds red."""
    count = len(batch["boxes"])
    rows, captions = [], []
    size = tuple(next(iter(batch["images"].values())).shape[-2:])
    with torch.no_grad():
        out = model(stack_inputs(batch["images"], list(model.config.inputs)).to(device))
    found = decode(out, size, max_detections=options.detector.max_detections, score_threshold=0.3)  # type: ignore[arg-type]
    classes = list(model.config.classes)
    for i in range(count):
        planned = [classes[int(c)] for c in batch["labels"][i].tolist()]
        detected = [
            f"{classes[int(c)]} {float(s):.2f}"
            for c, s in zip(found[i]["labels"].tolist(), found[i]["scores"].tolist(), strict=True)
        ]
        tiles = []
        for name in modalities:
            tile = to_display(batch["images"][name][i].numpy(), name)
            tile = draw_boxes(tile, batch["boxes"][i].numpy(), PLANNED_COLOUR, planned)
            tiles.append(draw_boxes(tile, found[i]["boxes"].cpu().numpy(), DETECTED_COLOUR, detected, below=True))
        rows.append(tiles)
        captions.append(batch["caption"][i] or "")
    legend = [
        ("planned box (class)", PLANNED_COLOUR),
        ("found by the real-data detector (class, score >= 0.3)", DETECTED_COLOUR),
    ]
    return grid_png(rows, [f"generated {m}" for m in modalities], captions=captions, legend=legend)


def evaluate(options: EvaluateConfig, *, progress: bool = True) -> EvalResult:
    """The real set's manifest says what the data is; the synthetic set must be compatible with it."""
    spec = ShardSet(options.real).spec
    require_compatible(
        ShardSet(options.synthetic).spec, spec, found_in=f"{options.synthetic}/_manifest.json", needed_by="evaluate"
    )
    inputs = options.detector.inputs or list(spec.modality_names)
    for name in inputs:
        if name not in spec.modality_names:
            raise ConfigError(f"evaluate.detector.inputs: unknown modality {name!r}; data has {spec.modality_names}")
    modalities = list(spec.modality_names)
    reference = ShardDataset(options.real, options.reference_split, modalities)
    test = ShardDataset(options.real, options.test_split, modalities)
    synthetic = ShardDataset(options.synthetic, options.synthetic_split, modalities)
    control = control_transform(options.control_shift) if options.control_shift else None
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    params_digest = section_hash(options, extra={"dataset": spec.model_dump(mode="json")})
    base_key = f"{params_digest}-{_split_digest(options.real, options.reference_split)}"
    real_model, real_history = _train_detector("real", reference, options, inputs, spec, f"{base_key}-real", progress)
    mixed_key = f"{base_key}-{_split_digest(options.synthetic, options.synthetic_split)}"
    mixed_data = ConcatDataset([reference, synthetic])
    mixed_model, mixed_history = _train_detector(
        "real+synthetic", mixed_data, options, inputs, spec, mixed_key, progress
    )
    device = next(real_model.parameters()).device
    seconds["train_detectors"] = time.perf_counter() - started

    # one decode per set: features, alignment and detections of every view come from the same batches
    started = time.perf_counter()
    extractor, extractor_name = build_extractor(options.features)
    log.info("evaluate: features from %s", extractor_name)
    real_views = {"real": real_model, "real+synthetic": mixed_model}
    generated_views = [View("generated", None, {"real": real_model})]
    if control:
        generated_views.append(View("control_misaligned", control, {"real": real_model}))
    measured = {
        "reference": measure_set(reference, [View("reference")], extractor, options, progress=progress),
        "real_test": measure_set(test, [View("real_test", None, real_views)], extractor, options, progress=progress),
        "generated": measure_set(
            synthetic, generated_views, extractor, options, keep_first=options.grid_samples, progress=progress
        ),
    }
    sets = {name: image_set for m in measured.values() for name, image_set in m.sets.items()}
    scores = {key: s for m in measured.values() for key, s in m.scores.items()}
    downstream = {"real": scores[("real_test", "real")], "real+synthetic": scores[("real_test", "real+synthetic")]}
    fidelity = {"real_test": downstream["real"], "generated": scores[("generated", "real")]}
    if control:
        fidelity["control_misaligned"] = scores[("control_misaligned", "real")]
    seconds["measure"] = time.perf_counter() - started

    started = time.perf_counter()
    ref = sets["reference"].features
    realism_table = {
        name: {
            m: realism(
                ref[m],
                image_set.features[m],
                kid_subset_size=options.kid_subset_size,
                kid_subsets=options.kid_subsets,
                k=options.nearest_k,
                seed=options.features.seed,
            )
            for m in modalities
        }
        for name, image_set in sets.items()
        if name != "reference"
    }
    alignment_table = {name: image_set.alignment() for name, image_set in sets.items()}
    seconds["realism_alignment"] = time.perf_counter() - started

    paired = None
    if options.paired_split is not None:
        started = time.perf_counter()
        real_items = ShardDataset(options.real, options.paired_split, modalities)
        paired = paired_scores(
            real_items,
            synthetic,
            modalities,
            lpips=load_lpips(options.lpips, device),
            device=device,
            progress=progress,
        )
        seconds["paired"] = time.perf_counter() - started

    agreement = None
    if spec.layout_kind is not None:
        started = time.perf_counter()
        dense_sets = {"real_test": (test, None), "generated": (synthetic, None)}
        if control:
            dense_sets["control_misaligned"] = (synthetic, control)
        agreement = layout_agreement(options, spec, reference, dense_sets, inputs, f"{base_key}-layout", progress)
        seconds["layout_agreement"] = time.perf_counter() - started

    metrics: dict[str, Any] = {
        "feature_extractor": extractor_name,
        "realism": realism_table,
        "alignment": alignment_table,
        "layout_fidelity": {name: s.summary() for name, s in fidelity.items()},
        **({"layout_agreement": {"kind": spec.layout_kind, **agreement}} if agreement is not None else {}),
        **({"paired": {"split": options.paired_split, **paired}} if paired is not None else {}),
        "downstream": {
            **{name: s.summary() for name, s in downstream.items()},
            "gain_map50": round(downstream["real+synthetic"].map50 - downstream["real"].map50, 4),
            "gain_map50_95": round(downstream["real+synthetic"].map50_95 - downstream["real"].map50_95, 4),
            "train_samples": {"real": len(reference), "real+synthetic": len(mixed_data)},
            "steps": options.detector_train.steps,
        },
        "detector": {
            "inputs": inputs,
            "params": sum(p.numel() for p in real_model.parameters()),
            "control_shift_px": options.control_shift,
        },
    }
    summary = headline(metrics)
    fsio.write_json_atomic(options.report, metrics)
    fsio.write_json_atomic(options.metrics, summary)
    for name, scores in downstream.items():
        _write_curve(fsio.join(options.plots, f"pr_{name.replace('+', '_')}.csv"), scores)
    write_history_csv(fsio.join(options.plots, "loss_real.csv"), real_history)
    write_history_csv(fsio.join(options.plots, "loss_real_synthetic.csv"), mixed_history)
    first = measured["generated"].first_batch
    if first is not None:
        fsio.write_bytes_atomic(options.grid, sample_sheet(first, modalities, real_model, options, device))
    shutil.rmtree(options.checkpoints, ignore_errors=True)  # spent: both models and the metrics are written
    log.info("evaluate: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return EvalResult(metrics, summary, seconds)


def _write_curve(path: str, scores: DetectionScores) -> None:
    lines = ["recall,precision"] + [
        f"{r},{p}" for r, p in zip(scores.recall_points, scores.precision_at_recall, strict=True)
    ]
    fsio.write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())

"""Stage ``evaluate``: does the synthetic data look right, follow its layout, and make detectors better?

Detectors are trained per seed on the real training split alone and on every mixing recipe
(diffx/eval/recipes.py: synthetic rows at a ratio, all or curated, mixed or as pretraining); the gain of a
recipe is its paired per-seed difference from real-only, with a 95 % interval. Then one decode of each
image set feeds every measurement made on it (diffx/metrics/measure.py: features per modality, edge alignment
of every RGB/X pair, each detector's finds, scored with pycocotools). A control set (the generated set with
RGB and X shifted apart and off their layout) runs through the same measurements: if it does not score
worse, the metrics cannot see misalignment and the numbers above it mean little. Data with a dense layout
adds its layout agreement (diffx/eval/dense.py: mIoU, S-measure / MAE or edge SSIM) on the same three sets. Outputs:
``metrics/eval.json`` for ``dvc metrics``, CSV curves and the recipe gains for ``dvc plots``, a sample
sheet, and the trained models (safetensors).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from diffx import fsio
from diffx.config import DiffxConfig, EvaluateConfig, section_hash
from diffx.data.spec import DatasetSpec, require_compatible
from diffx.errors import ConfigError, DataError
from diffx.eval.dense import layout_agreement
from diffx.eval.detectors import (
    inputs_of,
    real_detector,
    real_detector_key,
    seeded,
    split_digest,
    train_detector,
)
from diffx.eval.recipes import gain_table, gains_csv, recipe_datasets
from diffx.metrics.alignment import shift_image
from diffx.metrics.coco_map import DetectionScores
from diffx.metrics.features import build_extractor
from diffx.metrics.grids import draw_boxes, grid_png, to_display
from diffx.metrics.measure import Transform, View, measure_set
from diffx.metrics.paired import paired_scores
from diffx.metrics.realism import realism
from diffx.models.detector import CenterNet, decode, stack_inputs
from diffx.models.lpips import load_lpips
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.stages.guard import guard
from diffx.train.distributed import init_distributed
from diffx.train.loop import write_history_csv

log = logging.getLogger(__name__)


def run(config: DiffxConfig, *, progress: bool = True) -> EvalResult:
    guard("evaluate", config)
    return evaluate(config.evaluate, progress=progress)


def control_transform(shift: int) -> Transform:
    """The misaligned control: RGB moved by +shift px and every X modality by -shift (both axes)."""

    def apply(images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            name: shift_image(value, shift, shift) if name == "rgb" else shift_image(value, -shift, -shift)
            for name, value in images.items()
        }

    return apply


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
    recipes = downstream["recipes"]
    names = [n for n in recipes if n != "real"]
    return {
        **dense,
        **paired,
        "fid": {m: v["fid"] for m, v in generated.items()},
        "registered_share": {m: v["registered_share"] for m, v in report["alignment"]["generated"].items()},
        "layout_fidelity_map50": {name: s["map50"] for name, s in fidelity.items()},
        "layout_fidelity_ap50_by_size": {name: fidelity[name]["ap50_by_size"] for name in ("generated", "real_test")},
        "map50": {name: recipes[name]["map50"]["mean"] for name in recipes},
        "recipe_gain_map50": {name: recipes[name]["gain_map50"] for name in names},
        "recipe_gain_map50_95": {name: recipes[name]["gain_map50_95"]["mean"] for name in names},
    }


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


def _label(name: str, seed: int, first: int) -> str:
    """The first seed keeps the plain name (``real``, the recipe's): the model folders a user opens first."""
    return name if seed == first else f"{name}@{seed}"


@dataclass(frozen=True)
class _Pool:
    """Where a recipe pool's rows come from: the shard set and split (for the run key) and the dataset over them."""

    root: str
    split: str
    dataset: Dataset | None  # None: the pool is not read (no recipe draws from it)


@dataclass
class _Detectors:
    models: dict[str, CenterNet]  # by label
    histories: dict[str, list[dict[str, float]]]
    train_samples: dict[str, int]
    reused_real: bool


def _train_all(
    options: EvaluateConfig,
    spec: DatasetSpec,
    reference: Dataset,
    pools: dict[str, _Pool],
    progress: bool,
) -> _Detectors:
    """Real-only per seed (the first one from the curate stage when it matches), then every recipe per seed."""
    seeds, first = options.detector_seeds, options.detector_seeds[0]
    found = _Detectors({}, {}, {}, reused_real=False)
    ctx = init_distributed(options.device)
    reference_digest = split_digest(options.real, options.reference_split)

    def where(label: str) -> dict[str, Any]:
        return {
            "save_to": fsio.join(options.output, label),
            "checkpoints": fsio.join(options.checkpoints, label),
            "progress": progress,
            "ctx": ctx,
        }

    for seed in seeds:
        label = _label("real", seed, first)
        found.models[label], found.histories[label], _, reused = real_detector(  # the first seed's: curate's
            label,
            reference,
            options,
            spec,
            seed,
            reference_digest,
            saved=options.real_detector if seed == first else None,
            **where(label),
        )
        found.reused_real = found.reused_real or reused
        found.train_samples[label] = len(reference)  # type: ignore[arg-type]
    for recipe in options.recipes:
        pool = pools[recipe.pool]
        if pool.dataset is None or len(pool.dataset) == 0:  # type: ignore[arg-type]
            raise DataError(
                pool.root, f"recipe {recipe.name!r} draws from it but it has no rows in split {pool.split!r}"
            )
        digest = f"{split_digest(pool.root, pool.split)}-{section_hash(recipe)}"
        for seed in seeds:
            label = _label(recipe.name, seed, first)
            data = recipe_datasets(recipe, reference, pool.dataset, seed)
            key = f"{real_detector_key(options, spec, seed, reference_digest)}-{digest}-{label}"
            init = None
            if data.pretrain is not None:
                steps = max(1, round(recipe.pretrain_share * options.detector_train.steps))
                pretrain = seeded(options.detector_train, seed, steps)
                pre_model, _ = train_detector(
                    f"{label}.pretrain",
                    data.pretrain,
                    options,
                    spec,
                    f"{key}-pretrain",
                    train=pretrain,
                    **where(f"{label}.pretrain"),
                )
                init = {k: v.detach().clone() for k, v in pre_model.state_dict().items()}
            train = seeded(options.detector_train, seed)
            found.models[label], found.histories[label] = train_detector(
                label, data.train, options, spec, key, train=train, init=init, **where(label)
            )
            found.train_samples[label] = len(data.train) + (len(data.pretrain) if data.pretrain else 0)  # type: ignore[arg-type]
    return found


def evaluate(options: EvaluateConfig, *, progress: bool = True) -> EvalResult:
    """The real set's manifest says what the data is; the synthetic set must be compatible with it."""
    spec = ShardSet(options.real).spec
    require_compatible(
        ShardSet(options.synthetic).spec, spec, found_in=f"{options.synthetic}/_manifest.json", needed_by="evaluate"
    )
    inputs = inputs_of(options, spec)
    for name in inputs:
        if name not in spec.modality_names:
            raise ConfigError(f"evaluate.detector.inputs: unknown modality {name!r}; data has {spec.modality_names}")
    modalities = list(spec.modality_names)
    reference = ShardDataset(options.real, options.reference_split, modalities)
    test = ShardDataset(options.real, options.test_split, modalities)
    synthetic = ShardDataset(options.synthetic, options.synthetic_split, modalities)
    curated = None
    if any(r.pool == "curated" for r in options.recipes):
        fs, path = fsio.get_fs(fsio.join(options.curated, "_manifest.json"))
        if not fs.exists(path):
            raise DataError(options.curated, "a curated recipe needs the curate stage's shard set (diffx curate)")
        require_compatible(
            ShardSet(options.curated).spec, spec, found_in=f"{options.curated}/_manifest.json", needed_by="evaluate"
        )
        curated = ShardDataset(options.curated, options.synthetic_split, modalities)
    control = control_transform(options.control_shift) if options.control_shift else None
    seconds: dict[str, float] = {}
    every_setting = section_hash(options, extra={"dataset": spec.model_dump(mode="json")})  # the report's provenance

    started = time.perf_counter()
    pools = {
        "synthetic": _Pool(options.synthetic, options.synthetic_split, synthetic),
        "curated": _Pool(options.curated, options.synthetic_split, curated),
        "real": _Pool(options.real, options.reference_split, reference),
    }
    detectors = _train_all(options, spec, reference, pools, progress)
    real_model = detectors.models["real"]
    device = next(real_model.parameters()).device
    seconds["train_detectors"] = time.perf_counter() - started

    # one decode per set: features, alignment and detections of every view come from the same batches
    started = time.perf_counter()
    extractor, extractor_name = build_extractor(options.features)
    log.info("evaluate: features from %s", extractor_name)
    generated_views = [View("generated", None, {"real": real_model})]
    if control:
        generated_views.append(View("control_misaligned", control, {"real": real_model}))
    measured = {
        "reference": measure_set(reference, [View("reference")], extractor, options, progress=progress),
        "real_test": measure_set(
            test, [View("real_test", None, detectors.models)], extractor, options, progress=progress
        ),
        "generated": measure_set(
            synthetic, generated_views, extractor, options, keep_first=options.grid_samples, progress=progress
        ),
    }
    sets = {name: image_set for m in measured.values() for name, image_set in m.sets.items()}
    scores = {key: s for m in measured.values() for key, s in m.scores.items()}
    on_test = {label: scores[("real_test", label)] for label in detectors.models}
    seeds, first = options.detector_seeds, options.detector_seeds[0]
    recipe_table = gain_table(
        [on_test[_label("real", s, first)] for s in seeds],
        {r.name: [on_test[_label(r.name, s, first)] for s in seeds] for r in options.recipes},
        list(spec.classes),
    )
    fidelity = {"real_test": on_test["real"], "generated": scores[("generated", "real")]}
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
        layout_key = f"{every_setting}-{split_digest(options.real, options.reference_split)}-layout"
        agreement = layout_agreement(options, spec, reference, dense_sets, inputs, layout_key, progress)
        seconds["layout_agreement"] = time.perf_counter() - started

    metrics: dict[str, Any] = {
        "settings_digest": every_setting,
        "feature_extractor": extractor_name,
        "realism": realism_table,
        "alignment": alignment_table,
        "layout_fidelity": {name: s.summary() for name, s in fidelity.items()},
        **({"layout_agreement": {"kind": spec.layout_kind, **agreement}} if agreement is not None else {}),
        **({"paired": {"split": options.paired_split, **paired}} if paired is not None else {}),
        "downstream": {
            "seeds": seeds,
            "recipes": recipe_table,
            "recipe_settings": {r.name: r.model_dump(mode="json") for r in options.recipes},
            "per_model": {label: s.summary() for label, s in on_test.items()},
            "train_samples": detectors.train_samples,
            "steps": options.detector_train.steps,
            "real_detector_from_curate": detectors.reused_real,
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
    for name in ["real", *(r.name for r in options.recipes)]:  # the first seed's curves
        _write_curve(fsio.join(options.plots, f"pr_{name}.csv"), on_test[name])
        if name in detectors.histories:
            write_history_csv(fsio.join(options.plots, f"loss_{name}.csv"), detectors.histories[name])
    fsio.write_bytes_atomic(fsio.join(options.plots, "recipe_gains.csv"), gains_csv(recipe_table).encode())
    first_batch = measured["generated"].first_batch
    if first_batch is not None:
        fsio.write_bytes_atomic(options.grid, sample_sheet(first_batch, modalities, real_model, options, device))
    shutil.rmtree(options.checkpoints, ignore_errors=True)  # spent: the models and the metrics are written
    log.info("evaluate: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return EvalResult(metrics, summary, seconds)


def _write_curve(path: str, scores: DetectionScores) -> None:
    lines = ["recall,precision"] + [
        f"{r},{p}" for r, p in zip(scores.recall_points, scores.precision_at_recall, strict=True)
    ]
    fsio.write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())

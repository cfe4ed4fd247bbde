"""Where the evaluation's time goes, per component, on the demo data (or any params file).

Feature extraction (images/s per modality), the alignment search (pairs/s), detector training
(samples/s, forward + backward + AdamW), detector inference (images/s) and pycocotools scoring (s).
Needs the canonical shards (``dvc repro ingest``). Prints one JSON document.

    python benchmarks/evaluate.py [--params params.yaml] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import torch

from diffx.config import load_config
from diffx.metrics.alignment import pair_scores
from diffx.metrics.features import build_extractor, extract
from diffx.metrics.measure import View, measure_set
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.reader import ShardSet
from diffx.train.detector import DetectorTrainer, build_detector
from diffx.train.distributed import init_distributed


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=20, help="detector training steps to time")
    args = parser.parse_args()
    config = load_config(args.params)
    options = config.evaluate
    spec = ShardSet(options.real).spec  # what the data is comes from its manifest
    names = list(spec.modality_names)
    dataset = ShardDataset(options.real, options.reference_split, names)
    batch, load_s = _timed(lambda: detection_collate([dataset[i] for i in range(len(dataset))]))
    n = len(dataset)
    result: dict[str, Any] = {
        "benchmark": "evaluate",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "images": n,
        "size": list(next(iter(batch["images"].values())).shape[-2:]),
        "decode_images_per_s": round(n / load_s, 1),
    }
    extractor, name = build_extractor(options.features)
    result["features"] = {"extractor": name}
    for modality in names:
        _, seconds = _timed(lambda m=modality: extract(extractor, batch["images"][m], options.features.batch_size))
        result["features"][f"{modality}_images_per_s"] = round(n / seconds, 1)
    if "rgb" in names:
        for modality in (m for m in names if m != "rgb"):
            _, seconds = _timed(
                lambda m=modality: pair_scores(batch["images"]["rgb"], batch["images"][m], options.align_max_shift)
            )
            result[f"alignment_{modality}_pairs_per_s"] = round(n / seconds, 1)
    inputs = options.detector.inputs or names
    with tempfile.TemporaryDirectory(prefix="diffx-bench-eval-") as tmp:
        train = options.detector_train.model_copy(update={"steps": args.steps, "checkpoint_every": 10**6})
        ctx = init_distributed(options.device)
        model = build_detector(
            options.detector, inputs, [spec.modality(m).channels for m in inputs], list(spec.classes)
        )
        trainer = DetectorTrainer(model, dataset, train, ctx, f"{tmp}/ckpt", "bench", progress=False)
        trainer.run(1)  # warm-up step
        samples_per_s = trainer.run()
        result["detector"] = {
            "params": sum(p.numel() for p in model.parameters()),
            "train_samples_per_s": round(samples_per_s, 1),
            "batch_size": train.batch_size,
        }
        _, plain = _timed(lambda: measure_set(dataset, [View("real")], extractor, options))
        _, with_detector = _timed(lambda: measure_set(dataset, [View("real", None, {"d": model})], extractor, options))
        result["detector"]["detect_and_score_s"] = round(with_detector - plain, 3)
        result["detector"]["inference_images_per_s"] = round(n / max(with_detector - plain, 1e-9), 1)
        # the evaluation's one-decode pass against decoding the set once per view (five views on a generated set)
        views = [View(f"v{i}", None, {"d": model}) for i in range(2)]
        _, one_pass = _timed(lambda: measure_set(dataset, views, extractor, options))
        _, two_passes = _timed(lambda: [measure_set(dataset, [v], extractor, options) for v in views])
        result["single_decode_pass_speedup_two_views"] = round(two_passes / one_pass, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

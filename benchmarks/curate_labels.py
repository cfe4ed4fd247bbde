"""Which boxes should generated rows carry? The detector gain of each label source, pool and ratio, with controls.

Run in a workspace where `dvc repro` finished (the demo: `make demo`): it reads params.yaml, the real and
generated shards and the curate stage's real-data detector, relabels a pool with diffx.curate.labels (the
stage's own code), and trains the evaluation's detector per seed on real + the drawn rows, exactly as a mixed
`evaluate.recipes` entry does. The baseline is the workspace's real-only models (reports/eval.json). Pools:
`synthetic` (every generated row), `curated` (data/curated as the stage wrote it), and `real` (the real
training rows again: the control that tells a gain from the generated images from a gain from relabelling or
from seeing more rows). One detector run per config and seed (~90 s each on 2 cores). Prints one JSON line
per config.

    python benchmarks/curate_labels.py synthetic:plan:1.0 synthetic:detector:1.0 real:detector:1.0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffx.config import CurateLabelsConfig, RecipeConfig, load_config
from diffx.curate.labels import choose_labels
from diffx.eval.detectors import load_saved, real_detector_key, seeded, split_digest, train_detector
from diffx.eval.recipes import recipe_datasets
from diffx.metrics.features import build_extractor
from diffx.metrics.measure import View, measure_set
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.train.distributed import init_distributed


class Relabelled(Dataset):
    """``base``'s rows with other boxes (in the model's frame, where the detector trains)."""

    def __init__(self, base: Dataset, boxes: list[tuple[np.ndarray, np.ndarray]]):
        self.base, self.boxes = base, boxes

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        boxes, labels = self.boxes[index]
        item["boxes"] = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        item["labels"] = torch.as_tensor(labels, dtype=torch.int64)
        return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="pool:source:ratio, e.g. synthetic:detector:1.0")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = load_config(args.params)
    ev, cur = config.evaluate, config.curate
    spec = ShardSet(ev.real).spec
    modalities = list(spec.modality_names)
    reference = ShardDataset(ev.real, ev.reference_split, modalities)
    test = ShardDataset(ev.real, ev.test_split, modalities)
    pools = {
        "synthetic": ShardDataset(ev.synthetic, ev.synthetic_split, modalities),
        "curated": ShardDataset(ev.curated, ev.synthetic_split, modalities),
        "real": reference,
    }
    ctx = init_distributed(ev.device)
    key = real_detector_key(ev, spec, ev.detector_seeds[0], split_digest(ev.real, ev.reference_split))
    saved = load_saved(cur.detector, key, ev, spec, ctx.device)
    if saved is None:
        raise SystemExit(f"{cur.detector}: no real-data detector of these settings; run the curate stage first")
    detector = saved[0]
    extractor, _ = build_extractor(ev.features)
    per_model = json.loads(Path(ev.report).read_text())["downstream"]["per_model"]
    first = ev.detector_seeds[0]
    real_map = {s: per_model["real" if s == first else f"real@{s}"]["map50"] for s in ev.detector_seeds}

    for spec_text in args.configs:
        pool_name, source, ratio = spec_text.split(":")
        pool: Dataset = pools[pool_name]
        boxes_total = None
        if source != "plan":
            found = measure_set(pool, [View("pool", None, {"real": detector})], extractor, ev)  # type: ignore[arg-type]
            labels = CurateLabelsConfig(source=source)  # type: ignore[arg-type]
            chosen = [
                choose_labels(truth, finds, labels, score_threshold=cur.score_threshold, iou=cur.iou)
                for truth, finds in zip(found.truth, found.found[("pool", "real")], strict=True)
            ]
            pool = Relabelled(pool, [(c.boxes, c.labels) for c in chosen])
            boxes_total = {"from_plan": sum(c.from_plan for c in chosen), "added": sum(c.added for c in chosen)}
        recipe = RecipeConfig(name="bench", ratio=float(ratio))
        started, rows = time.perf_counter(), []
        for seed in ev.detector_seeds:
            data = recipe_datasets(recipe, reference, pool, seed).train  # the mixed recipe's own draw
            with tempfile.TemporaryDirectory() as scratch:
                model, _ = train_detector(
                    f"{spec_text}@{seed}",
                    data,
                    ev,
                    spec,
                    f"bench-{spec_text}-{seed}",
                    ctx=ctx,
                    train=seeded(ev.detector_train, seed),
                    save_to=f"{scratch}/model",
                    checkpoints=f"{scratch}/checkpoints",
                    progress=False,
                )
            scored = measure_set(test, [View("test", None, {"d": model})], extractor, ev).scores[("test", "d")]
            rows.append({"seed": seed, "map50": scored.map50, "gain": round(scored.map50 - real_map[seed], 4)})
        gains = [r["gain"] for r in rows]
        print(
            json.dumps(
                {
                    "config": spec_text,
                    "boxes": boxes_total,
                    "per_seed": rows,
                    "mean_gain": round(float(np.mean(gains)), 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

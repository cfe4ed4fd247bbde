"""Generation speed by sampler and step count on the trained demo model, and how close fast samplers come.

For each setting: samples/s, seconds per sample, the share of wall time in the model against PNG encoding
and Parquet writing, and shard bytes/s. Quality of a fast setting is measured against the 50-step DDIM
reference with the same seeds and layouts: PSNR per modality (higher = closer). Needs ``dvc repro
train_unet`` first. Prints one JSON document.

    python benchmarks/generate.py [--samples 16] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
from bench_plan import small_plan

from diffx.config import load_config, with_overrides
from diffx.metrics.image_metrics import psnr
from diffx.sample.generate import PlanExecutor
from diffx.shards.writer import ShardSetWriter

SETTINGS = [("ddim", 50), ("pndm", 50), ("ddim", 25), ("dpmsolver++", 20), ("unipc", 20), ("dpmsolver++", 10)]


def _images(samples: list[Any], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {
        n: torch.stack([torch.from_numpy(s.images[n].to_array().astype(np.float32)) for s in samples]) for n in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    base = load_config(args.params)
    result: dict[str, Any] = {
        "benchmark": "generate",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "settings": {},
    }
    with tempfile.TemporaryDirectory(prefix="diffx-bench-gen-") as tmp:
        config, rows, spec = small_plan(base, tmp, args.samples)
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        for sampler, steps in SETTINGS:
            options = with_overrides(
                config, {"generate.sampler.sampler": sampler, "generate.sampler.steps": steps}
            ).generate
            generator = PlanExecutor(options, spec)
            generator.shard(rows[: config.generate.batch_size])  # warm-up
            generator.model_seconds = generator.encode_seconds = 0.0
            started = time.perf_counter()
            samples = generator.shard(rows)
            writer = ShardSetWriter(f"{tmp}/{sampler}-{steps}", spec, generated=True)
            tick = time.perf_counter()
            record = writer.write_shard("train", 0, samples)
            write_s = time.perf_counter() - tick
            wall = time.perf_counter() - started
            outputs[f"{sampler}-{steps}"] = _images(samples, spec.modality_names)
            result["settings"][f"{sampler}-{steps}"] = {
                "samples_per_s": round(len(samples) / wall, 3),
                "seconds_per_sample": round(wall / len(samples), 4),
                "model_share": round(generator.model_seconds / wall, 3),
                "encode_share": round(generator.encode_seconds / wall, 3),
                "write_share": round(write_s / wall, 3),
                "shard_mb_per_s": round(record.bytes / 1e6 / write_s, 1),
            }
        reference = outputs["ddim-50"]
        for key, images in outputs.items():
            if key == "ddim-50":
                continue
            result["settings"][key]["psnr_vs_ddim50"] = {
                n: round(
                    float(
                        psnr(images[n] / spec.modality(n).max_value, reference[n] / spec.modality(n).max_value).mean()
                    ),
                    2,
                )
                for n in spec.modality_names
            }
        fast, ref = result["settings"]["dpmsolver++-20"], result["settings"]["ddim-50"]
        result["dpmsolver20_speedup_vs_ddim50"] = round(fast["samples_per_s"] / ref["samples_per_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""MP-VAE training throughput (samples/s) for the demo config and the paper config (512 px, M=2).

Runs the real trainer (VaeTrainer: data loading, augmentation, forward, backward, AdamW, EMA) on
shards it writes to a temp folder. On CUDA it also compares bf16 autocast with fp32 and channels_last.
Prints one JSON document.

    python benchmarks/train_vae.py [--steps 3] [--skip-paper]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffx.config import parse_config
from diffx.data.demo import DEMO_SPEC, render_scene, sample_rng
from diffx.data.images import encode_png
from diffx.data.sample import Sample
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.shards.writer import ShardSetWriter
from diffx.train.distributed import init_distributed
from diffx.train.vae import VaeTrainer

RGB_THERMAL = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=("person", "bicycle", "car"),
)


def _demo_shards(root: Path, count: int) -> None:
    writer = ShardSetWriter(str(root), DEMO_SPEC)
    samples = []
    for i in range(count):
        scene = render_scene(sample_rng(1, "bench", i), 160, 128)
        images = {
            n: encode_png(a, n, 1) for n, a in (("rgb", scene.rgb), ("thermal", scene.thermal), ("depth", scene.depth))
        }
        samples.append(Sample(f"d{i}", "train", 160, 128, images))
    writer.finalize(writer.write_split("train", samples, 64))


def _paper_shards(root: Path, count: int, size: int = 512) -> None:
    rng = np.random.default_rng(0)
    writer = ShardSetWriter(str(root), RGB_THERMAL)
    samples = []
    for i in range(count):
        rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        thermal = rng.integers(0, 256, (size, size), dtype=np.uint8)
        samples.append(
            Sample(
                f"p{i}",
                "train",
                size,
                size,
                {"rgb": encode_png(rgb, "rgb", 1), "thermal": encode_png(thermal, "thermal", 1)},
            )
        )
    writer.finalize(writer.write_split("train", samples, 64))


def _params(spec: DatasetSpec, shards: Path, work: Path, model: dict[str, Any], train: dict[str, Any]) -> dict:
    return {
        "data": {"modalities": [m.model_dump() for m in spec.modalities], "classes": list(spec.classes)},
        "ingest": {
            "source": {
                "format": "coco_folders",
                "root": str(work),
                "modalities": {"rgb": "rgb"},
                "annotations": {"train": "a.json"},
            }
        },
        "vae": {
            "data": str(shards),
            "model": model,
            "train": {"checkpoint_every": 10_000, "log_every": 10_000, **train},
            "checkpoints": str(work / "ckpt"),
        },
    }


def measure(
    spec: DatasetSpec, shards: Path, work: Path, model: dict[str, Any], train: dict[str, Any], steps: int
) -> dict[str, Any]:
    config = parse_config(_params(spec, shards, work, model, {**train, "steps": steps + 1}))
    trainer = VaeTrainer(config.vae, init_distributed(train.get("device", "auto")), resume=False, progress=False)
    trainer.run(until=1)  # warm-up: allocator, first-call kernels
    if trainer.ctx.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.run()
    if trainer.ctx.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {
        "device": str(trainer.ctx.device),
        "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2),
        "batch_size": train["batch_size"],
        "steps_timed": steps,
        "seconds_per_step": round(elapsed / steps, 3),
        "samples_per_s": round(steps * train["batch_size"] / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {
        "benchmark": "train_vae",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
        },
    }
    with tempfile.TemporaryDirectory(prefix="diffx-bench-vae-") as tmp:
        work = Path(tmp)
        _demo_shards(work / "demo", 32)
        demo_model = {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "norm_num_groups": 16}
        demo_train = {"batch_size": 8, "crop": 64, "device": "cpu", "mixed_precision": "no"}
        result["demo_cpu"] = measure(DEMO_SPEC, work / "demo", work / "w1", demo_model, demo_train, args.steps)
        result["demo_cpu_full_frames"] = measure(
            DEMO_SPEC, work / "demo", work / "w2", demo_model, {**demo_train, "crop": None}, args.steps
        )
        if not args.skip_paper:
            _paper_shards(work / "paper", 4)
            paper_model: dict[str, Any] = {}  # the defaults are SD v1.x's VAE: 128/256/512/512, 2 per level
            paper_train = {"batch_size": 1, "device": "cpu", "mixed_precision": "no", "hflip": False}
            result["paper_512_m2_cpu"] = measure(
                RGB_THERMAL, work / "paper", work / "w3", paper_model, paper_train, max(1, args.steps // 3)
            )
            if cuda:
                for name, extra in {
                    "fp32": {"mixed_precision": "no"},
                    "bf16": {"mixed_precision": "bf16"},
                    "bf16_channels_last": {"mixed_precision": "bf16", "channels_last": True},
                }.items():
                    result[f"paper_512_m2_cuda_{name}"] = measure(
                        RGB_THERMAL,
                        work / "paper",
                        work / f"g-{name}",
                        paper_model,
                        {**paper_train, "batch_size": 4, "device": "cuda", **extra},
                        args.steps * 3,
                    )
            else:
                result["cuda"] = "not available on this machine: bf16/channels_last comparison skipped"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Speed levers of the demo's two training stages, measured on the real trainers and the real demo data.

Each variant builds the stage's own trainer (VaeTrainer / UnetTrainer from params.yaml plus overrides), runs a
few warm-up steps, then times ``--steps`` optimizer steps. Variants of one stage run interleaved (A B A B ...)
so a busy machine slows them alike; the JSON gives samples/s per variant and its ratio to the baseline.

Levers: bf16 autocast on the CPU, channels_last, torch.compile of the forward, threads. Quality is not
measured here (a lever that is faster must still train as well: see the note of the demo-in-15-minutes issue).

    python benchmarks/demo_levers.py --root /path/to/a/repo/after/dvc/repro [--steps 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from diffx.config import parse_config
from diffx.train.distributed import init_distributed
from diffx.train.unet import UnetTrainer
from diffx.train.vae import VaeTrainer


def _config(root: Path, work: Path, stage: str, overrides: dict[str, Any]) -> Any:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    section = raw[stage]
    section["data"] = str(root / section["data"])
    section["checkpoints"] = str(work / "ckpt")
    if stage == "unet":
        section["vae"] = str(root / section["vae"])
    for key, value in overrides.items():
        section["train"][key] = value
    return parse_config(raw)


def _time_steps(build: Callable[[], Any], steps: int, warmup: int, bf16: bool, compiled: bool) -> float:
    trainer = build()
    if compiled:
        trainer.model.forward = torch.compile(trainer.model.forward)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        trainer.run(until=warmup)
        started = time.perf_counter()
        trainer.run(until=warmup + steps)
    elapsed = time.perf_counter() - started
    return steps * trainer.train_cfg.batch_size / elapsed


VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"bf16": True},
    "channels_last": {"overrides": {"channels_last": True}},
    "compile": {"compiled": True},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True, help="a repo whose dvc repro has run (data, models)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stages", default="vae,unet")
    parser.add_argument("--variants", default="fp32,bf16,channels_last,compile")
    args = parser.parse_args()
    ctx = init_distributed("cpu")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "platform": platform.platform(),
        "steps": args.steps,
        "rounds": args.rounds,
    }
    for stage in args.stages.split(","):
        trainer_class = VaeTrainer if stage == "vae" else UnetTrainer
        rates: dict[str, list[float]] = {v: [] for v in args.variants.split(",")}
        for _ in range(args.rounds):
            for name in rates:
                variant = VARIANTS[name]
                with tempfile.TemporaryDirectory() as tmp:
                    config = _config(args.root, Path(tmp), stage, variant.get("overrides", {}))

                    def build(config: Any = config, trainer_class: Any = trainer_class) -> Any:
                        return trainer_class(config, ctx, resume=False, progress=False)

                    rates[name].append(
                        _time_steps(
                            build, args.steps, args.warmup, variant.get("bf16", False), variant.get("compiled", False)
                        )
                    )
        best = {name: max(values) for name, values in rates.items()}
        base = best.get("fp32") or next(iter(best.values()))
        results[stage] = {
            name: {"samples_per_second": round(rate, 2), "vs_fp32": round(rate / base, 3), "runs": rates[name]}
            for name, rate in best.items()
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

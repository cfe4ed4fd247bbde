"""The MP-VAE with and without its Laplacian pyramid on the real samples of ../shared/realdata, at a CPU budget.

The paper (Table 6) reports validation PSNR per modality for its SD-size MP-VAE at 512 px, without / with the
pyramid: FLIR 29.25 / 30.89, MFNet 31.45 / 32.86, COME15K 30.15 / 35.73 dB. This runs our MP-VAE (the demo's
width unless --paper-width) on LLVIP (RGB + LWIR), MFNet (RGB + thermal) and SUN RGB-D (RGB + 16-bit depth),
ingested by their readers and resized to --resolution, the same seeds and steps for both arms. The shared
samples are few (30 LLVIP pairs, 2 MFNet frames, 15 + 15 SUN RGB-D): where a set has no validation split the
score is on its training frames (how well the model fits what it saw at this budget, not how it generalises).
Prints one JSON document.

    python benchmarks/vae_pyramid.py [--realdata ../shared/realdata] [--steps 300] [--resolution 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from diffx.config import parse_config
from diffx.shards.reader import ShardSet
from diffx.stages.ingest import ingest
from diffx.train.distributed import init_distributed
from diffx.train.vae import VaeTrainer

RGB = {"name": "rgb", "channels": 3}
THERMAL = {"name": "thermal", "channels": 1}
DEPTH = {"name": "depth", "channels": 1, "bit_depth": 16, "units": "mm", "scale": 0.001}
SETS: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[str]]] = {
    "llvip": (
        {"format": "voc_pairs", "modalities": {"rgb": "visible/{split}", "thermal": "infrared/{split}"}},
        [RGB, THERMAL],
        ["person"],
    ),
    "mfnet": ({"format": "mfnet", "splits": [], "labels": False}, [RGB, THERMAL], ["person"]),
    "sunrgbd": ({"format": "sunrgbd", "labels": None}, [RGB, DEPTH], ["bed"]),
}
PAPER = {"FLIR": (29.25, 30.89), "MFNet": (31.45, 32.86), "COME15K": (30.15, 35.73)}


def _config(name: str, realdata: Path, work: Path, args: argparse.Namespace, pyramid: bool) -> Any:
    source, modalities, classes = SETS[name]
    model: dict[str, Any] = {"use_pyramid": pyramid}
    if args.paper_width:
        model.update(block_out_channels=[64, 128, 256, 256], norm_num_groups=32)
    raw = {
        "data": {"modalities": modalities, "classes": classes, "frame": {"resolution": args.resolution}},
        "ingest": {
            "source": {**source, "root": str(realdata / name)},
            "output": str(work / "canonical"),
            "report": str(work / "ingest.json"),
            "metrics": str(work / "ingest-metrics.json"),
        },
        "vae": {
            "data": str(work / "canonical"),
            "model": model,
            "train": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "checkpoint_every": 10**6,
                "log_every": 10**6,
                "crop": args.crop,
                "device": "cpu",
            },
            "eval_samples": 64,
            "output": str(work / f"vae-{pyramid}"),
            "checkpoints": str(work / f"ckpt-{pyramid}"),
            "metrics": str(work / f"vae-{pyramid}.json"),
            "report": str(work / f"run-{pyramid}.json"),
            "plots": str(work / f"loss-{pyramid}.csv"),
            "grid": str(work / f"grid-{pyramid}.png"),
        },
        "quality": {"reports": str(work / "q"), "metrics": str(work / "qm"), "docs": None},
    }
    return parse_config(raw)


def run_set(name: str, realdata: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    ingested = False
    out: dict[str, Any] = {}
    for pyramid in (False, True):
        config = _config(name, realdata, work, args, pyramid)
        if not ingested:
            ingest(config.data, config.ingest, config.shards, progress=False)
            ingested = True
            counts = {}
            for record in ShardSet(config.vae.data).manifest.shards:
                counts[record.split] = counts.get(record.split, 0) + record.rows
            val = "val" if counts.get("val") else "train"
            out["frames"] = counts
            out["scored_on"] = val
        options = config.vae.model_copy(update={"val_split": val})
        started = time.perf_counter()
        trainer = VaeTrainer(options, init_distributed("cpu"), resume=False, progress=False)
        trainer.run()
        metrics = trainer.finish(1.0)
        out["with_pyramid" if pyramid else "without_pyramid"] = {
            "psnr": {m: v["psnr"] for m, v in metrics["val"].items()},
            "baseline_psnr": {m: v["baseline_psnr"] for m, v in metrics["val"].items()},
            "seconds": round(time.perf_counter() - started, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--sets", nargs="+", default=sorted(SETS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--paper-width", action="store_true", help="wider blocks [64, 128, 256, 256]")
    args = parser.parse_args()
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "benchmark": "vae_pyramid",
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "settings": {k: v for k, v in vars(args).items() if k != "realdata"},
        "paper_512px_sd_width": PAPER,
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            result["sets"][name] = run_set(name, args.realdata, Path(tmp) / name, args)
            print(json.dumps({name: result["sets"][name]}), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""How close sampling, training and shard writing come to this machine's limit, in one run.

On the trained demo model (``dvc repro train_unet`` first), all paired on the same cores:
- matmul FLOP/s (fp32 and bf16 square matmuls): the ceiling the hot paths are compared with;
- the UNet training step (forward + backward + AdamW) and sampling: FLOPs counted by
  torch.utils.flop_counter, achieved FLOP/s and their share of the matmul ceiling (MFU on a GPU);
- sampling samples/s uncached fp32 (what a plain port runs), cached fp32 and cached bf16, as ratios, with the
  PSNR of bf16 against fp32 images from the same seeds;
- a sampler sweep: samples/s and PSNR against a converged DDIM 100 reference for the paper's PLMS 50 and the
  fast samplers; the chosen one is the fastest within ``--tolerance-db`` of PLMS 50's PSNR;
- torch.compile of the cached UNet (``generate.compile``) at the device's fast precision, against eager;
- shard writing at 512 px: model-output arrays -> PNG -> Parquet shard, as a share of a plain copy of the
  same PNG bytes (Pillow level 6 on one thread, the old path, against the pooled fast writer).
Prints one JSON document. Runs unchanged on a GPU machine (fp16 is added there).

    python benchmarks/sampling_efficiency.py [--params params.yaml] [--samples 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_plan import small_plan
from torch.utils.flop_counter import FlopCounterMode

from diffx.config import load_config
from diffx.data.demo import render_scene, sample_rng
from diffx.data.images import encode_png
from diffx.data.parallel import usable_cpus
from diffx.data.png import encode_png_fast
from diffx.data.sample import Sample
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.metrics.image_metrics import psnr
from diffx.sample.generate import PlanExecutor
from diffx.sample.pipeline import LayoutRequest
from diffx.shards.writer import ShardSetWriter

SWEEP = [("pndm", 50), ("ddim", 50), ("ddim", 25), ("dpmsolver++", 20), ("dpmsolver++", 15), ("dpmsolver++", 10)]
WRITE_SPEC = DatasetSpec(
    modalities=(
        ModalitySpec(name="rgb", channels=3),
        ModalitySpec(name="thermal", channels=1),
        ModalitySpec(name="depth", channels=1, bit_depth=16),
    ),
    classes=("person", "bicycle", "car"),
)


def _best_of(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_flops(dtype: torch.dtype, device: torch.device, size: int = 2048) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    seconds = _best_of(lambda: (a @ b, torch.cuda.synchronize() if device.type == "cuda" else None), 5)
    return 2 * size**3 / seconds


def _counted(fn: Any) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _requests(rows: list[dict[str, Any]]) -> list[LayoutRequest]:
    return [
        LayoutRequest(
            r["caption"] or "",
            torch.tensor([o["bbox"] for o in r["objects"]], dtype=torch.float32).reshape(-1, 4),
            torch.tensor([o["category_id"] for o in r["objects"]], dtype=torch.long),
            int(r["height"]),
            int(r["width"]),
            int(r["seed"]),
        )
        for r in rows
    ]


def _psnr(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: round(float(psnr(a[name], b[name]).mean()), 2) for name in a}


def sampling(executor: PlanExecutor, requests: list[LayoutRequest], ceiling: dict[str, float]) -> dict[str, Any]:
    pipeline = executor.pipeline
    device = executor.device
    base = {"sampler": "ddim", "steps": 25, "guidance": executor.sampler["guidance"]}
    variants = {"fp32_uncached": ("fp32", False), "fp32_cached": ("fp32", True), "bf16_cached": ("bf16", True)}
    if device.type == "cuda":
        variants["fp16_cached"] = ("fp16", True)
    pipeline(requests[:1], **{**base, "steps": 2})  # warm-up
    out: dict[str, Any] = {"setting": "ddim-25", "samples": len(requests)}
    images: dict[str, dict[str, torch.Tensor]] = {}
    for name, (precision, cache) in variants.items():
        started = time.perf_counter()
        images[name] = pipeline(requests, **base, precision=precision, cache=cache)
        seconds = min(
            time.perf_counter() - started,
            _best_of(lambda p=precision, c=cache: pipeline(requests, **base, precision=p, cache=c), 1),
        )
        flops = _counted(lambda p=precision, c=cache: pipeline(requests[:1], **base, precision=p, cache=c))
        limit = ceiling["bf16" if precision != "fp32" else "fp32"]
        out[name] = {
            "samples_per_s": round(len(requests) / seconds, 3),
            "gflop_per_sample": round(flops / 1e9, 2),
            "achieved_gflop_s": round(flops * len(requests) / seconds / 1e9, 2),
            "share_of_matmul": round(flops * len(requests) / seconds / limit, 3),
        }
    fp32 = out["fp32_uncached"]["samples_per_s"]
    out["cached_vs_uncached"] = round(out["fp32_cached"]["samples_per_s"] / fp32, 3)
    out["bf16_vs_fp32_cached"] = round(out["bf16_cached"]["samples_per_s"] / out["fp32_cached"]["samples_per_s"], 3)
    out["bf16_cached_vs_fp32_uncached"] = round(out["bf16_cached"]["samples_per_s"] / fp32, 3)
    out["psnr_cached_vs_uncached"] = _psnr(images["fp32_cached"], images["fp32_uncached"])
    out["psnr_bf16_vs_fp32"] = _psnr(images["bf16_cached"], images["fp32_cached"])
    return out


def compiled_sampling(
    executor: PlanExecutor, requests: list[LayoutRequest], ceiling: dict[str, float], out: dict[str, Any]
) -> None:
    """torch.compile (generate.compile) of the cached path at the device's fast precision, into ``out`` beside its
    eager figures. Run last: compiling is in place and there is no public way back to eager."""
    pipeline = executor.pipeline
    fast = "bf16" if executor.device.type == "cuda" else "fp32"
    settings = {"sampler": "ddim", "steps": 25, "guidance": executor.sampler["guidance"], "precision": fast}
    eager = pipeline(requests, **settings)
    pipeline.unet.compile(dynamic=False)
    started = time.perf_counter()
    pipeline(requests, **settings)
    compile_s = time.perf_counter() - started
    seconds = _best_of(lambda: pipeline(requests, **settings), 2)
    compiled = pipeline(requests, **settings)
    flops = out[f"{fast}_cached"]["gflop_per_sample"] * 1e9
    out[f"{fast}_cached_compiled"] = {
        "samples_per_s": round(len(requests) / seconds, 3),
        "first_call_s": round(compile_s, 1),
        "achieved_gflop_s": round(flops * len(requests) / seconds / 1e9, 2),
        "share_of_matmul": round(flops * len(requests) / seconds / ceiling[fast], 3),
        "vs_eager": round(len(requests) / seconds / out[f"{fast}_cached"]["samples_per_s"], 3),
    }
    out["psnr_compiled_vs_eager"] = _psnr(compiled, eager)


def sweep(executor: PlanExecutor, requests: list[LayoutRequest], tolerance_db: float, precision: str) -> dict[str, Any]:
    pipeline = executor.pipeline
    guidance = executor.sampler["guidance"]
    reference = pipeline(requests, sampler="ddim", steps=100, guidance=guidance)
    table: dict[str, Any] = {}
    paper_uncached = _best_of(lambda: pipeline(requests, sampler="pndm", steps=50, guidance=guidance, cache=False), 1)
    for sampler, steps in SWEEP:
        started = time.perf_counter()
        got = pipeline(requests, sampler=sampler, steps=steps, guidance=guidance, precision=precision)
        seconds = time.perf_counter() - started
        quality = _psnr(got, reference)
        table[f"{sampler}-{steps}"] = {
            "samples_per_s": round(len(requests) / seconds, 3),
            "psnr_vs_ddim100": quality,
            "mean_psnr": round(float(np.mean(list(quality.values()))), 2),
            "speedup_vs_plms50_uncached_fp32": round(paper_uncached / seconds, 2),
        }
    floor = table["pndm-50"]["mean_psnr"] - tolerance_db
    eligible = [k for k, v in table.items() if v["mean_psnr"] >= floor]
    chosen = max(eligible, key=lambda k: table[k]["samples_per_s"])
    return {
        "precision": precision,
        "reference": "ddim-100 fp32 cached",
        "settings": table,
        "tolerance_db": tolerance_db,
        "chosen": chosen,
        "chosen_speedup_vs_plms50_uncached_fp32": table[chosen]["speedup_vs_plms50_uncached_fp32"],
    }


def training_step(executor: PlanExecutor, batch_size: int, frame: tuple[int, int], ceiling: float) -> dict[str, Any]:
    """Forward + backward + AdamW of the demo UNet on a training-shaped batch (latents, captions, boxes)."""
    unet = executor.pipeline.unet
    unet.train()
    vae, text = executor.pipeline.vae, executor.pipeline.text
    g = torch.Generator().manual_seed(0)
    factor = vae.downsample_factor
    shape = (batch_size, vae.config.latent_channels, frame[0] // factor, frame[1] // factor)
    latents = torch.randn(shape, generator=g).to(executor.device)
    states, mask = text.encode(["An image of a street scene at night with two cars."] * batch_size)
    boxes = torch.rand(batch_size, executor.max_objects, 4, generator=g).sort(-1).values.to(executor.device)
    phrases = executor.pipeline.phrase_table[torch.randint(0, 3, (batch_size, executor.max_objects), generator=g)]
    box_mask = (torch.rand(batch_size, executor.max_objects, generator=g) > 0.5).float().to(executor.device)
    timesteps = torch.randint(0, 1000, (batch_size,), generator=g).to(executor.device)
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-6)

    def step() -> None:
        with torch.enable_grad():
            noise = unet(latents, timesteps, states, mask, boxes=boxes, phrases=phrases, box_mask=box_mask)
            loss = torch.nn.functional.mse_loss(noise, latents)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    seconds = _best_of(step, 3)
    flops = _counted(step)
    unet.eval()
    return {
        "batch_size": batch_size,
        "frame": list(frame),
        "samples_per_s": round(batch_size / seconds, 2),
        "gflop_per_step": round(flops / 1e9, 2),
        "achieved_gflop_s": round(flops / seconds / 1e9, 2),
        "share_of_matmul": round(flops / seconds / ceiling, 3),
    }


def _arrays(count: int, size: int) -> list[dict[str, np.ndarray]]:
    """Model-output-like frames at ``size`` px: the demo renderer's RGB, thermal and 16-bit depth."""
    out = []
    for index in range(count):
        scene = render_scene(sample_rng(0, "write", index), size, size)
        out.append({"rgb": scene.rgb, "thermal": scene.thermal, "depth": scene.depth})
    return out


def shard_writing(count: int, size: int, work: Path) -> dict[str, Any]:
    frames = _arrays(count, size)
    workers = usable_cpus()

    def build(encode: Any, pool: ThreadPoolExecutor | None) -> list[Sample]:
        def one(index: int) -> Sample:
            images = {name: encode(array, f"{index}:{name}") for name, array in frames[index].items()}
            return Sample(f"w{index:05d}", "train", size, size, images)

        return list(pool.map(one, range(count))) if pool else [one(i) for i in range(count)]

    def write(samples: list[Sample], label: str) -> None:
        ShardSetWriter(str(work / label), WRITE_SPEC, generated=True).write_shard("train", 0, samples)

    result: dict[str, Any] = {"samples": count, "size_px": size, "encode_threads": workers}
    paths = {
        "pillow6_one_thread": (lambda a, s: encode_png(a, s, 6), None),
        "fast_level1_pool": (lambda a, s: encode_png_fast(a, s, 1), ThreadPoolExecutor(workers)),
        "fast_level0_pool": (lambda a, s: encode_png_fast(a, s, 0), ThreadPoolExecutor(workers)),
    }
    for label, (encode, pool) in paths.items():
        samples: list[Sample] = []
        seconds = _best_of(
            lambda e=encode, p=pool, n=label, kept=samples: (kept.clear(), kept.extend(build(e, p)), write(kept, n)), 2
        )
        payload = sum(len(i.data) for s in samples for i in s.images.values())
        copy_dir = work / f"{label}-copy"
        copy_dir.mkdir()

        def copy(folder: Path = copy_dir, batch: list[Sample] = samples) -> None:
            for sample in batch:
                for name, image in sample.images.items():
                    with open(folder / f"{sample.id}-{name}.png", "wb") as handle:
                        handle.write(image.data)
                        handle.flush()
                        os.fsync(handle.fileno())  # as durable as the shard writer's atomic write

        copy_s = _best_of(copy, 2)
        result[label] = {
            "mb": round(payload / 1e6, 2),
            "mb_per_s": round(payload / 1e6 / seconds, 1),
            "plain_copy_mb_per_s": round(payload / 1e6 / copy_s, 1),
            "share_of_plain_copy": round(copy_s / seconds, 3),
        }
        if pool:
            pool.shutdown()
    base = result["pillow6_one_thread"]
    result["fast_level1_size_vs_pillow6"] = round(result["fast_level1_pool"]["mb"] / base["mb"], 3)
    result["fast_level1_speedup"] = round(result["fast_level1_pool"]["mb_per_s"] / base["mb_per_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tolerance-db", type=float, default=1.0)
    parser.add_argument("--write-samples", type=int, default=32)
    args = parser.parse_args()
    base = load_config(args.params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict[str, Any] = {
        "benchmark": "sampling_efficiency",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }
    ceiling = {"fp32": matmul_flops(torch.float32, device), "bf16": matmul_flops(torch.bfloat16, device)}
    result["matmul_gflop_s"] = {k: round(v / 1e9, 1) for k, v in ceiling.items()}
    with tempfile.TemporaryDirectory(prefix="diffx-bench-eff-") as tmp:
        config, rows, spec = small_plan(base, tmp, args.samples, **{"generate.device": device.type})
        executor = PlanExecutor(config.generate, spec)
        requests = _requests(rows)
        frame = (int(rows[0]["height"]), int(rows[0]["width"]))
        result["train_step"] = training_step(executor, config.unet.train.batch_size, frame, ceiling["fp32"])
        result["sampling"] = sampling(executor, requests, ceiling)
        result["sampler_sweep"] = sweep(executor, requests, args.tolerance_db, "fp32")
        compiled_sampling(executor, requests, ceiling, result["sampling"])
        result["shard_writing"] = shard_writing(args.write_samples, 512, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

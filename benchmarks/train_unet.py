"""DiffX-UNet forward + backward throughput (samples/s), sampling throughput, and both as a share of the machine.

Each figure comes with the FLOPs torch counts for it (torch.utils.flop_counter) and the achieved FLOP/s as a
share of a large matrix product's FLOP/s on the same device, dtype and run: how close the hot paths are to
what the cores (or the GPU) can do at all, the figure to beat with fusion, caching and lower precision.

Demo config (3 levels, 64-128 channels, MiniLM width 384, 20x16 latents) and the paper config (SD v1.x UNet:
320/640/1280/1280, 768-d text, 64x64 latents = 512 px, 30 box slots, base frozen as the paper does). On CUDA
it also compares fp32 with bf16 autocast, SDPA attention (diffusers' default) and torch.compile.
Prints one JSON document.

    python benchmarks/train_unet.py [--steps 3] [--skip-paper] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffx.models.unet import DiffXUNet

DEMO = {
    "block_out_channels": (64, 128, 128),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": 384,
    "phrase_dim": 384,
    "norm_num_groups": 32,
}
PAPER: dict[str, Any] = {}  # DiffXUNet's defaults are SD v1.x's UNet


def _batch(
    batch: int, latent_hw: tuple[int, int], text_dim: int, phrase_dim: int, tokens: int, device: torch.device
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(batch, 30, 4, generator=g)
    boxes = torch.cat([boxes[..., :2].minimum(boxes[..., 2:]), boxes[..., :2].maximum(boxes[..., 2:])], -1)
    data = {
        "sample": torch.randn(batch, 4, *latent_hw, generator=g),
        "timestep": torch.randint(0, 1000, (batch,)),
        "text_states": torch.randn(batch, tokens, text_dim, generator=g),
        "text_mask": torch.ones(batch, tokens),
        "boxes": boxes,
        "phrases": torch.randn(batch, 30, phrase_dim, generator=g),
        "box_mask": (torch.rand(batch, 30, generator=g) > 0.5).float(),
    }
    return {k: v.to(device) for k, v in data.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(action: Any, calls: int, device: torch.device) -> float:
    """Mean wall time of ``action`` over ``calls`` calls, the device drained before and after."""
    _sync(device)
    started = time.perf_counter()
    for _ in range(calls):
        action()
    _sync(device)
    return (time.perf_counter() - started) / calls


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """FLOP/s of a size^3 matrix product: the ceiling the model's achieved FLOP/s is compared with."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device, dtype)
    b = torch.randn(size, size, generator=g).to(device, dtype)
    for _ in range(3):
        a @ b
    return 2 * size**3 / seconds_per_call(lambda: a @ b, repeats, device)


def counted_flops(action: Any) -> int:
    """The FLOPs torch dispatches for one call of ``action`` (matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        action()
    return int(counter.get_total_flops())


def measure(
    config: dict[str, Any],
    *,
    batch: int,
    latent_hw: tuple[int, int],
    tokens: int,
    steps: int,
    device: torch.device,
    freeze: bool,
    bf16: bool = False,
    compile_model: bool = False,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=latent_hw[0], **config).to(device)
    if freeze:
        model.freeze_base()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    forward = torch.compile(model) if compile_model else model
    data = _batch(batch, latent_hw, model.config.cross_attention_dim, model.config.phrase_dim, tokens, device)

    def step(module: Any = forward) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module(**data).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    step()  # warm-up (allocator, kernels, compile)
    first_call_s = time.perf_counter() - started
    flops = counted_flops(lambda: step(model))  # on the eager module: the counter cannot see into a compiled graph
    elapsed = seconds_per_call(step, steps, device) * steps
    return {
        "tflop_per_step": round(flops / 1e12, 4),
        "tflops_achieved": round(flops / (elapsed / steps) / 1e12, 3),
        "device": str(device),
        "batch": batch,
        "latent": list(latent_hw),
        "steps_timed": steps,
        "seconds_per_step": round(elapsed / steps, 3),
        "samples_per_s": round(steps * batch / elapsed, 2),
        "params_total_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "params_trainable_m": round(sum(p.numel() for p in params) / 1e6, 2),
        "bf16": bf16,
        "compiled": compile_model,
        "first_call_s": round(first_call_s, 1),
    }


def measure_sampling(
    config: dict[str, Any],
    *,
    batch: int,
    latent_hw: tuple[int, int],
    tokens: int,
    steps: int,
    device: torch.device,
    bf16: bool = False,
    compile_model: bool = False,
) -> dict[str, Any]:
    """One denoising step as sampling runs it: classifier-free guidance doubles the batch, no gradients."""
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=latent_hw[0], **config).to(device).eval()
    data = _batch(2 * batch, latent_hw, model.config.cross_attention_dim, model.config.phrase_dim, tokens, device)
    forward = torch.compile(model) if compile_model else model

    @torch.no_grad()
    def denoise(module: Any = forward) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            module(**data)

    started = time.perf_counter()
    denoise()
    first_call_s = time.perf_counter() - started
    flops = counted_flops(lambda: denoise(model))
    elapsed = seconds_per_call(denoise, steps, device) * steps
    return {
        "device": str(device),
        "batch": batch,
        "latent": list(latent_hw),
        "bf16": bf16,
        "compiled": compile_model,
        "first_call_s": round(first_call_s, 1),
        "seconds_per_denoising_step": round(elapsed / steps, 4),
        "sample_steps_per_s": round(steps * batch / elapsed, 2),
        "tflop_per_step": round(flops / 1e12, 4),
        "tflops_achieved": round(flops / (elapsed / steps) / 1e12, 3),
    }


def _share(result: dict[str, Any], peak: float) -> None:
    result["share_of_matmul"] = round(result["tflops_achieved"] * 1e12 / peak, 4)
    print(json.dumps(result), file=sys.stderr, flush=True)  # each figure as it lands, for runs cut short


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU figures only (the CPU ones take minutes)")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    result: dict[str, Any] = {
        "benchmark": "train_unet",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    cpu_peak = matmul_flops(cpu, torch.float32, 2048, repeats=5)
    result["matmul_tflops"] = {"cpu_fp32": round(cpu_peak / 1e12, 3)}
    if not args.skip_cpu:
        result["demo_cpu"] = measure(
            DEMO, batch=16, latent_hw=(16, 20), tokens=96, steps=args.steps, device=cpu, freeze=False
        )
        result["demo_cpu_sampling"] = measure_sampling(
            DEMO, batch=8, latent_hw=(16, 20), tokens=96, steps=args.steps * 3, device=cpu
        )
        _share(result["demo_cpu"], cpu_peak)
        _share(result["demo_cpu_sampling"], cpu_peak)
        if not args.skip_paper:
            result["paper_512_frozen_base_cpu"] = measure(
                PAPER, batch=1, latent_hw=(64, 64), tokens=248, steps=1, device=cpu, freeze=True
            )
            _share(result["paper_512_frozen_base_cpu"], cpu_peak)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        peaks = {
            False: matmul_flops(gpu, torch.float32, 8192),  # fp32 as PyTorch runs it by default (no TF32)
            True: matmul_flops(gpu, torch.bfloat16, 8192),
        }
        result["matmul_tflops"].update(
            {"cuda_fp32": round(peaks[False] / 1e12, 1), "cuda_bf16": round(peaks[True] / 1e12, 1)}
        )
        for name, extra in {
            "fp32": {},
            "bf16": {"bf16": True},
            "bf16_compile": {"bf16": True, "compile_model": True},
        }.items():
            key = f"paper_512_frozen_base_cuda_{name}"
            result[key] = measure(
                PAPER, batch=8, latent_hw=(64, 64), tokens=248, steps=args.steps * 3, device=gpu, freeze=True, **extra
            )
            _share(result[key], peaks[bool(extra.get("bf16"))])
        sampling_variants = {"fp32": (False, False), "bf16": (True, False), "bf16_compile": (True, True)}
        for name, (bf16, compiled) in sampling_variants.items():
            key = f"paper_512_cuda_sampling_{name}"
            result[key] = measure_sampling(
                PAPER,
                batch=8,
                latent_hw=(64, 64),
                tokens=248,
                steps=args.steps * 5,
                device=gpu,
                bf16=bf16,
                compile_model=compiled,
            )
            _share(result[key], peaks[bf16])
        result["paper_512_cuda_sampling_bf16_vs_fp32"] = round(
            result["paper_512_cuda_sampling_fp32"]["seconds_per_denoising_step"]
            / result["paper_512_cuda_sampling_bf16"]["seconds_per_denoising_step"],
            2,
        )
    else:
        result["cuda"] = "not available on this machine: bf16 / SDPA / torch.compile comparison skipped"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

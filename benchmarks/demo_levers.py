"""Seconds per training step of the demo's two models under each speed lever the 15-minute demo weighed.

One process, the levers measured back to back on the same model and batch so they compare (never run beside
another torch job on 2 cores). MP-VAE (RGB + thermal + depth, batch 8 of 64 px crops): one decoder per modality
(the paper) vs one shared decoder, fp32 vs bf16 autocast, channels_last. DiffX-UNet (batch 16, 20x16 latents,
96 text tokens): 8 vs 4 attention heads, the SDPA kernel vs the math one, bf16 autocast. The evaluation's
detector (batch 16, 160x128, RGB + T + D): NCHW vs channels_last. AdamW over the UNet's parameters: torch's
per-tensor loop (its CPU default) vs the fused kernel. Each model's GFLOP per step (torch's FLOP counter) over
its seconds gives the rate the cores reach: how far any setting that keeps the compute can go. With
``--shards`` (a workspace's data/canonical), the cost of one training read with and without the decoded-row
cache. Which lever the demo keeps, and the quality each one costs or not, is in the README ("How fast the demo
runs"). Prints one JSON document.

    python benchmarks/demo_levers.py [--steps 3] [--shards data/canonical]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from train_unet import DEMO, _batch, seconds_per_call

from diffx.models.detector import CenterNet
from diffx.models.mpvae import MPVAE
from diffx.models.unet import DiffXUNet
from diffx.shards.dataset import DECODE_CACHE_BYTES, ShardDataset

VAE = {
    "modalities": ("rgb", "thermal", "depth"),
    "channels": (3, 1, 1),
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
}


def vae_training_step(
    decoder: str, *, bf16: bool = False, channels_last: bool = False, batch: int = 8, crop: int = 64
) -> Callable[[], None]:
    """One demo MP-VAE training step (forward, loss, backward, AdamW), run once already so the next calls are warm."""
    torch.manual_seed(0)
    model = MPVAE(decoder=decoder, **VAE)  # type: ignore[arg-type]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    images = {
        name: torch.rand(batch, c, crop, crop, generator=g).mul(2).sub(1).contiguous(memory_format=fmt)
        for name, c in zip(VAE["modalities"], VAE["channels"], strict=True)
    }
    noise = torch.randn(batch, VAE["latent_channels"], crop // 8, crop // 8, generator=g)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images, noise=noise)
        loss = sum(torch.nn.functional.mse_loss(out.reconstructions[k].float(), v) for k, v in images.items())
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return step


def vae_step_seconds(decoder: str, *, steps: int, **options: Any) -> float:
    return round(seconds_per_call(vae_training_step(decoder, **options), steps, torch.device("cpu")), 3)


def demo_unet(heads: int) -> tuple[DiffXUNet, dict[str, torch.Tensor]]:
    """The demo UNet with ``heads`` attention heads and one batch of 16 for it."""
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=16, **{**DEMO, "attention_head_dim": heads})
    return model, _batch(16, (16, 20), DEMO["cross_attention_dim"], DEMO["phrase_dim"], 96, torch.device("cpu"))


def unet_training_step(heads: int, *, math_attention: bool = False, bf16: bool = False) -> Callable[[], None]:
    """One demo UNet training step (forward, loss, backward, AdamW), run once already so the next calls are warm."""
    model, data = demo_unet(heads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        # A fresh context each call: sdpa_kernel's context manager can be entered only once.
        kernel = sdpa_kernel(SDPBackend.MATH) if math_attention else contextlib.nullcontext()
        with kernel, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**data).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return step


def unet_step_seconds(heads: int, *, steps: int, **options: Any) -> float:
    return round(seconds_per_call(unet_training_step(heads, **options), steps, torch.device("cpu")), 3)


def gflop_per_step(step: Callable[[], None]) -> float:
    """Forward and backward FLOPs of one training step (torch's counter; the optimizer's element-wise work aside)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return round(counter.get_total_flops() / 1e9, 1)


def detector_step_seconds(*, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = CenterNet(in_channels=5, num_classes=3, width=16)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # as the training loop does: the model only
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x = torch.rand(16, 5, 128, 160, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        sum(v.float().pow(2).mean() for v in model(x).values()).backward()  # type: ignore[union-attr]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return round(seconds_per_call(step, steps, torch.device("cpu")), 4)


def adamw_step_ms(*, fused: bool, steps: int) -> float:
    model, _ = demo_unet(4)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if fused else None)
    optimizer.step()
    return round(seconds_per_call(optimizer.step, max(steps, 10), torch.device("cpu")) * 1e3, 2)


def read_ms_per_item(root: str, reads: int = 5) -> dict[str, float]:
    """ms per training read of every train row, ``reads`` times over in a shuffled order, cache on and off."""
    out = {}
    for name, budget in (("decode_every_read", 0), ("decoded_row_cache", DECODE_CACHE_BYTES)):
        dataset = ShardDataset(root, "train", decode_cache_bytes=budget)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        started = time.perf_counter()
        for _ in range(reads):
            for index in order:
                dataset.item(index)
        out[name] = round((time.perf_counter() - started) / (reads * len(order)) * 1e3, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shards", default=None, help="a shard set with a train split (e.g. data/canonical)")
    args = parser.parse_args()
    steps = args.steps
    vae: dict[str, Any] = {
        "per_modality_fp32": vae_step_seconds("per_modality", steps=steps),
        "shared_fp32": vae_step_seconds("shared", steps=steps),
        "shared_channels_last": vae_step_seconds("shared", channels_last=True, steps=steps),
        "shared_bf16_autocast": vae_step_seconds("shared", bf16=True, steps=1),
    }
    unet: dict[str, Any] = {
        "heads8_sdpa": unet_step_seconds(8, steps=steps),
        "heads4_sdpa": unet_step_seconds(4, steps=steps),
        "heads4_math_attention": unet_step_seconds(4, steps=steps, math_attention=True),
        "heads4_bf16_autocast": unet_step_seconds(4, steps=1, bf16=True),
    }
    detector = {
        "nchw": detector_step_seconds(channels_last=False, steps=steps * 5),
        "channels_last": detector_step_seconds(channels_last=True, steps=steps * 5),
    }
    adamw = {"per_tensor": adamw_step_ms(fused=False, steps=steps), "fused": adamw_step_ms(fused=True, steps=steps)}
    flops = {"vae": gflop_per_step(vae_training_step("per_modality")), "unet": gflop_per_step(unet_training_step(4))}
    print(
        json.dumps(
            {
                "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "vae_seconds_per_step": vae,
                "unet_seconds_per_step": unet,
                "vae_shared_speedup": round(vae["per_modality_fp32"] / vae["shared_fp32"], 2),
                "unet_heads4_speedup": round(unet["heads8_sdpa"] / unet["heads4_sdpa"], 2),
                "detector_seconds_per_step": detector,
                "detector_channels_last_speedup": round(detector["nchw"] / detector["channels_last"], 2),
                "unet_adamw_ms_per_step": adamw,
                "gflop_per_step": flops,
                "gflop_per_second": {
                    "vae": round(flops["vae"] / vae["per_modality_fp32"], 1),
                    "unet": round(flops["unet"] / unet["heads4_sdpa"], 1),
                },
                **({"read_ms_per_item": read_ms_per_item(args.shards)} if args.shards else {}),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

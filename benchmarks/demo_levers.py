"""Seconds per training step of the demo's two models under each speed lever the 15-minute demo weighed.

One process, the levers measured back to back on the same model and batch so they compare (never run beside
another torch job on 2 cores). MP-VAE (RGB + thermal + depth, batch 8 of 64 px crops): one decoder per modality
(the paper) vs one shared decoder, fp32 vs bf16 autocast, channels_last. DiffX-UNet (batch 16, 20x16 latents,
96 text tokens): 8 vs 4 attention heads, the SDPA kernel vs the math one, bf16 autocast. Which lever the demo
keeps, and the quality each one costs or not, is in the README ("How fast the demo runs").
Prints one JSON document.

    python benchmarks/demo_levers.py [--steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from train_unet import DEMO, _batch, seconds_per_call

from diffx.models.mpvae import MPVAE
from diffx.models.unet import DiffXUNet

VAE = {
    "modalities": ("rgb", "thermal", "depth"),
    "channels": (3, 1, 1),
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
}


def vae_step_seconds(
    decoder: str, *, bf16: bool = False, channels_last: bool = False, steps: int, batch: int = 8, crop: int = 64
) -> float:
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
    return round(seconds_per_call(step, steps, torch.device("cpu")), 3)


def unet_step_seconds(heads: int, *, steps: int, math_attention: bool = False, bf16: bool = False) -> float:
    torch.manual_seed(0)
    model = DiffXUNet(sample_size=16, **{**DEMO, "attention_head_dim": heads})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = _batch(16, (16, 20), DEMO["cross_attention_dim"], DEMO["phrase_dim"], 96, torch.device("cpu"))

    def step() -> None:
        # A fresh context each call: sdpa_kernel's context manager can be entered only once.
        kernel = sdpa_kernel(SDPBackend.MATH) if math_attention else contextlib.nullcontext()
        with kernel, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**data).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return round(seconds_per_call(step, steps, torch.device("cpu")), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
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
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

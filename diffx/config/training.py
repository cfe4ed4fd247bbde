"""The settings every training loop shares (VAE, UNet, detectors, layout nets)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diffx.section import Section


class TrainLoopConfig(Section):
    """What every training loop shares (diffx/train/loop.py); each loop's section sets its own schedule."""

    seed: int = 0
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="global batch: all processes and accumulation steps")
    shuffle: Literal["global", "shards"] = Field(
        default="global",
        description="data order of an epoch: global (any row after any other) or shards (shards in a seeded "
        "order, rows shuffled within windows of shuffle_buffer: a set larger than memory is read a few row groups "
        "at a time instead of one random row group per item); either is a pure function of (seed, epoch)",
    )
    shuffle_buffer: int = Field(default=2048, ge=1, description="rows per shuffle window (shuffle: shards)")
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(gt=0)
    warmup_steps: int = Field(default=50, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    ema_decay: float | None = Field(default=0.99, gt=0, lt=1)
    mixed_precision: Literal["no", "bf16"] = Field(default="bf16", description="bf16 autocast, CUDA only")
    channels_last: bool = False
    device: str = "auto"
    num_workers: int = Field(default=0, ge=0)
    read_ahead: int = Field(
        default=2,
        ge=0,
        description="micro-batches whose row groups each data process reads in the background while it decodes "
        "the current one (the plan knows them in advance); speed only, the same samples. Pays off over object "
        "stores; 0 = off",
    )
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)

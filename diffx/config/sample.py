"""The plan and generate stages: which scenes to make and how to sample them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diffx.config.unet import SamplerConfig
from diffx.section import Section


class PlanConfig(Section):
    """The generation plan: which layouts and captions to draw, written before anything is generated."""

    source: str = Field(default="data/captioned", description="real shards whose layouts are reused")
    split: str = "train"
    layouts: str | None = Field(default=None, description="user layouts instead: COCO JSON or JSONL")
    mode: Literal["sample", "one_per_item"] = Field(
        default="sample",
        description="sample: num_samples layouts drawn with replacement and augmented; one_per_item: exactly one "
        "row per item of the split, in order, its layout and caption unchanged (centred in the model's frame), "
        "for paired metrics against the real item (the paper's protocol: plan the test split)",
    )
    num_samples: int = Field(default=64, ge=1, description="rows to plan (mode sample)")
    rows_per_shard: int = Field(default=16, ge=1)
    seed: int = 0
    class_targets: dict[str, float] = Field(
        default_factory=lambda: {"bicycle": 2.0},
        description="class -> multiple of its real frequency per sample (bicycle: 2.0 = twice as many)",
    )
    flip: float = Field(default=0.5, ge=0, le=1)
    jitter: float = Field(default=0.05, ge=0, le=0.5, description="box shift/scale as a fraction of its size")
    box_dropout: float = Field(default=0.1, ge=0, le=1)
    max_paste_overlap: float = Field(default=0.2, ge=0, le=1, description="IoU limit for pasted boxes")
    segment_moves: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="segmentation layouts: chance per sample of a class-preserving edit (one object's region moved "
        "sideways with its box; never erases a class or overlaps another box beyond max_paste_overlap)",
    )
    output: str = "data/plan.parquet"
    report: str = "reports/plan.json"


class GenerateConfig(Section):
    plan: str = "data/plan.parquet"
    unet: str = Field(default="models/unet", description="a train_unet output folder (self-contained)")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    batch_size: int = Field(default=8, ge=1)
    device: str = "auto"
    workers: int = Field(default=0, ge=0, description="PNG encoding threads beside the model; 0 = one per usable core")
    png_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description="zlib level of the generated PNGs (lossless at any level; 0 = stored, largest and fastest; "
        "higher levels make slightly smaller files for much more encoding time)",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the UNet (inductor): each new batch size compiles once (tens of seconds), "
        "then every step runs the fused graph; for long runs (benchmarks/sampling_efficiency.py)",
    )
    split: str = "train"
    output: str = "data/synthetic"
    report: str = "reports/generate.json"
    lease_seconds: float = Field(
        default=60.0,
        gt=1,
        description="a worker's claim on a shard lasts this long unless renewed (every third of it); a killed "
        "worker's shards are taken over once its lease expires (at once on the same host)",
    )

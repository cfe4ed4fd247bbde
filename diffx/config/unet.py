"""The train_unet stage: the DiffX-UNet, its loop and the sampler its preview (and generate) use."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from diffx.config.training import TrainLoopConfig
from diffx.section import Section


class UnetModelConfig(Section):
    """DiffX-UNet (diffx/models/unet.py). The paper config is SD v1.x's UNet, frozen, from init_from_sd."""

    block_out_channels: list[int] = Field(
        default_factory=lambda: [32, 32, 64, 64],
        min_length=1,
        description="paper: SD v1.x's [320, 640, 1280, 1280]; the demo's first level, on the /4 latent, has no "
        "attention (a level's attention over 40 x 32 positions costs more than its convolutions); the full demo "
        "(presets/demo-full.yaml): [64, 64, 128, 128]",
    )
    down_block_types: list[str] = Field(
        default_factory=lambda: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    )
    up_block_types: list[str] = Field(
        default_factory=lambda: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    )
    layers_per_block: int = Field(default=1, ge=1, description="paper: 2")
    attention_head_dim: int = Field(
        default=2,
        ge=1,
        description="attention heads per block (diffusers' name for it; SD: 8). Fewer, wider heads run faster on a CPU",
    )
    norm_num_groups: int = Field(default=32, ge=1)
    layout: Literal["boxes", "dense"] = "boxes"
    box_raster_channels: int = Field(
        default=8,
        ge=0,
        description="box layouts: the planned boxes are also painted at latent resolution (each box's class "
        "embedding in this many channels, plus its coverage) and fed through zero-initialised input channels, "
        "beside the gated box tokens; 0 = tokens only (the paper)",
    )
    layout_tokens: bool = Field(
        default=False,
        description="the paper's layout tokens through GLIGEN's gated fusers (with the JME); false = the layout "
        "enters through the input channels alone (box layouts need box_raster_channels > 0). Off by default: on the "
        "demo the painted boxes carry the placement, the tokens add nothing measurable and cost 70 % more per step "
        "(the ablation in docs/demo-results.md); the paper presets keep them",
    )
    init_from_sd: str | None = Field(default=None, description="SD v1.x pipeline or UNet folder (diffusers)")
    freeze_base: bool = Field(default=True, description="with init_from_sd: train only fusers, tokenizer, JME")
    fuser_gate_init: float = Field(
        default=1.0,
        description="initial gamma of every GLIGEN fuser gate (tanh(gamma) scales the layout path). GLIGEN's 0 keeps "
        "a pretrained base unchanged (paper, from SD); a UNet trained from scratch has nothing to preserve, and at 0 "
        "the layout tokenizer and JME get no gradient until the gates move, which they barely do",
    )

    @property
    def painted_box_channels(self) -> int:
        """The raster channels the model gets: painted boxes exist for box layouts only."""
        return self.box_raster_channels if self.layout == "boxes" else 0

    @model_validator(mode="after")
    def _blocks_match(self) -> UnetModelConfig:
        if not len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types):
            raise ValueError("block_out_channels, down_block_types and up_block_types need the same length")
        return self

    @model_validator(mode="after")
    def _layout_reaches_the_unet(self) -> UnetModelConfig:
        if not self.layout_tokens and not (self.layout == "dense" or self.box_raster_channels):
            raise ValueError(
                "layout_tokens: false with box_raster_channels: 0: a box layout would reach the UNet by no path; "
                "paint the boxes (box_raster_channels > 0) or keep the tokens"
            )
        return self

    @model_validator(mode="after")
    def _sd_starts_as_sd(self) -> UnetModelConfig:
        # An open gate adds a random fuser's output to every SD block from step 0: the model no longer starts as
        # SD, which is the premise of GLIGEN's (and the paper's) recipe. Refused rather than silently closed, so a
        # params file never says one thing and trains another.
        if self.init_from_sd is not None and self.fuser_gate_init != 0.0:
            raise ValueError(
                f"fuser_gate_init={self.fuser_gate_init} with init_from_sd: an SD-initialised UNet must start with "
                "closed gates (0.0) so it starts as SD; the open demo value is for UNets trained from scratch"
            )
        return self


class UnetTrainConfig(TrainLoopConfig):
    steps: int = Field(
        default=1400,
        ge=1,
        description="optimizer steps; the fast default's 1,400 take 8 min on 2 cores at /4; 1,100 would save 1.8 "
        "min for layout fidelity 0.419 instead of 0.456 (docs/demo-results.md, 'The latent factor')",
    )
    batch_size: int = Field(default=16, ge=1, description="global batch: all processes and accumulation steps")
    lr: float = Field(default=1e-3, gt=0, description="paper: 5e-5 with warm-up 10k on a frozen SD base")
    checkpoint_every: int = Field(default=100, ge=1)
    caption_dropout: float = Field(default=0.5, ge=0, le=1, description="per sample: the caption becomes ''")
    layout_dropout: float = Field(default=0.1, ge=0, le=1, description="per sample: every layout slot is null")
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        default="v_prediction",
        description="what the UNet predicts: epsilon (the noise; SD v1.x and the paper, so any init_from_sd) or "
        "v_prediction (the velocity; the clean image at high noise, which a UNet trained from scratch learns far "
        "sooner than passing its input through). Saved with the model: sampling follows it",
    )
    min_snr_gamma: float | None = Field(default=5.0, gt=0, description="min-SNR loss weighting; null = off")
    box_loss_weight: float = Field(
        default=1.0,
        ge=0,
        description="extra weight of the noise error inside planned boxes (1 + this there, 1 elsewhere; the mean "
        "weight is divided out): objects are a small share of the latent and learn their place slower than "
        "the background (GeoDiffusion's foreground re-weighting); 0 = off",
    )
    gradient_checkpointing: bool = False
    cache_conditioning: bool = Field(
        default=True,
        description="encode every training image (VAE posterior) and caption (text states) once up front instead of "
        "every step; memory grows with the split, so for small and medium sets",
    )
    preview_every: int = Field(default=0, ge=0, description="steps between preview grids; 0 = only at the end")


class SamplerConfig(Section):
    """How samples are drawn. The paper samples with PLMS (pndm) 50 steps at guidance 5; the default is
    DPM-Solver++ 20, a multistep solver that needs fewer steps for the same result (its cost and quality against
    the others: benchmarks/sampling_efficiency.py)."""

    sampler: Literal["ddim", "dpmsolver++", "unipc", "pndm"] = "dpmsolver++"
    steps: int = Field(default=20, ge=1)
    guidance: float = Field(
        default=1.5,
        ge=0,
        description="classifier-free guidance scale (over caption and layout together, or over "
        "the caption alone when layout_guidance is set); 1 = no guidance branch (half the cost); higher scales "
        "follow the caption harder at the cost of realism (the paper: 5)",
    )
    layout_guidance: float | None = Field(
        default=None,
        ge=0,
        description="a guidance scale for the layout apart from the caption (composed guidance: a third branch per "
        "step, 1.5x the sampling cost); null = one scale for both",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="the UNet's compute precision (autocast; the sampler's arithmetic and the VAE decode stay "
        "fp32). bf16 / fp16 for GPUs (fp16 CUDA only); on a CPU without native bf16 (AVX512-BF16 / AMX) bf16 runs "
        "far slower than fp32. Cost and quality: benchmarks/sampling_efficiency.py",
    )


class UnetConfig(Section):
    """Text-encoder and layout-slot limits live in the conditioning section (shared with refine and the gates)."""

    data: str = "data/captioned"
    train_split: str = "train"
    preview_split: str = "val"
    vae: str = "models/vae"
    model: UnetModelConfig = Field(default_factory=UnetModelConfig)
    train: UnetTrainConfig = Field(default_factory=UnetTrainConfig)
    preview: SamplerConfig = Field(default_factory=SamplerConfig)
    preview_samples: int = Field(default=4, ge=1)
    output: str = "models/unet"
    checkpoints: str = "checkpoints/unet"
    metrics: str = Field(default="metrics/unet.json", description="headline numbers (dvc metrics)")
    report: str = Field(default="reports/unet/run.json", description="run report: speed, processes, resume")
    plots: str = "metrics/unet_loss.csv"
    grid: str = "reports/unet/preview.png"

    @model_validator(mode="after")
    def _sd_predicts_noise(self) -> UnetConfig:
        # SD v1.x was trained to predict the noise; asking its weights for the velocity starts from a wrong model
        if self.model.init_from_sd is not None and self.train.prediction_type != "epsilon":
            raise ValueError(
                f"unet.train.prediction_type={self.train.prediction_type} with unet.model.init_from_sd: SD v1.x "
                "UNets predict the noise, so an SD-initialised UNet trains with prediction_type: epsilon"
            )
        return self

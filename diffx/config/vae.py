"""The train_vae stage: the MP-VAE, its loop and its perceptual loss."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from diffx.config.training import TrainLoopConfig
from diffx.section import Section


class VaeModelConfig(Section):
    """MP-VAE architecture (diffx/models/mpvae.py); the paper config is SD v1.x's VAE."""

    block_out_channels: list[int] = Field(
        default_factory=lambda: [16, 32, 64],
        min_length=1,
        description="one entry per level; the latent is 2^(levels - 1) times smaller than the frame. Paper: [128, 256, "
        "512, 512] (SD v1.x, /8); the demo's three levels make an /4 latent, where the demo's objects are drawn "
        "(docs/demo-results.md, 'The latent factor'); the full demo (presets/demo-full.yaml): [32, 64, 64]",
    )
    layers_per_block: int = Field(default=1, ge=1, description="paper: 2")
    latent_channels: int = Field(
        default=4,
        ge=1,
        description="channels of the shared latent: more keep more of every modality and cost the UNet only its "
        "first and last convolution (paper: 4, SD's)",
    )
    norm_num_groups: int = Field(default=8, ge=1, description="paper: 32")
    use_pyramid: bool = True
    replicate_grey: bool = Field(default=False, description="feed 1-channel modalities as 3 equal channels")
    mid_block_add_attention: bool = True
    decoder: Literal["per_modality", "shared"] = Field(
        default="shared",
        description="per_modality: one decoder each (paper); shared: one decoder whose last conv has every "
        "modality's channels, about a third of the decoding cost on RGB+T+D",
    )
    posterior_logvar_init: float = Field(
        default=0.0,
        description="initial log-variance of the latent posterior; 0 = SD's (latent noise as large as the signal), "
        "-6 starts it narrow",
    )
    init_from_sd: str | None = Field(default=None, description="diffusers AutoencoderKL folder (paper: SD v1.4)")

    @model_validator(mode="after")
    def _groups_divide_widths(self) -> VaeModelConfig:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every block width, not {bad}")
        return self


class VaeTrainConfig(TrainLoopConfig):
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=8, ge=1, description="global batch: all processes and accumulation steps")
    lr: float = Field(
        default=2e-3,
        gt=0,
        description="the /4 demo VAE at 1e-3 ends 1.1 dB under its gate's baseline in RGB (the frame averaged to the "
        "latent grid and back); 2e-3 is above it in every modality (docs/demo-results.md, 'The latent factor')",
    )
    checkpoint_every: int = Field(default=500, ge=1)
    crop: int | None = Field(
        default=64, ge=8, description="random square crop (px) for training; null = whole frames (eval: whole)"
    )
    hflip: bool = Field(default=True, description="random horizontal flip, seeded per sample")
    kl_weight: float = Field(
        default=2.56e-4,
        ge=0,
        description="KL per latent element (a mean, like the reconstruction's per pixel); 2.56e-4 is 1e-6 on the "
        "KL summed over a 64 px crop's 4x8x8 latent. Paper: 0 (MSE + LPIPS)",
    )
    modality_weights: dict[str, float] = Field(
        default_factory=lambda: {"thermal": 2.5},
        description="loss weight per modality (unlisted: 1): a modality with small errors (thermal's flat scenes) "
        "gets little of a plain MSE sum's attention unless weighted up",
    )
    reconstruction_loss: Literal["mse", "log_mse"] = Field(
        default="mse",
        description="mse: the sum over modalities; log_mse: the sum of log MSEs (-PSNR / 4.34): each modality's dB "
        "count the same, which favours the one with the smallest error. log_mse takes the log of each "
        "process's micro-batch MSE, so unlike mse a run on N processes is not exactly the run on one",
    )
    lpips_weight: float = Field(
        default=0.0, ge=0, description="LPIPS term per modality next to the reconstruction (paper: 1); needs vae.lpips"
    )


class LpipsConfig(Section):
    """LPIPS-VGG from two local files (diffx/models/lpips.py); nothing is downloaded."""

    vgg16: str | None = Field(
        default=None, description="torchvision VGG16 checkpoint (vgg16-397923af.pth) or safetensors"
    )
    heads: str | None = Field(default=None, description="the lpips package's weights/v0.1/vgg.pth or safetensors")

    @property
    def configured(self) -> bool:
        return self.vgg16 is not None and self.heads is not None

    @model_validator(mode="after")
    def _both_or_neither(self) -> LpipsConfig:
        if (self.vgg16 is None) != (self.heads is None):
            raise ValueError("LPIPS needs both files: vgg16 (the VGG16 trunk) and heads (the linear heads)")
        return self


class VaeConfig(Section):
    data: str = "data/canonical"
    train_split: str = "train"
    val_split: str = "val"
    model: VaeModelConfig = Field(default_factory=VaeModelConfig)
    train: VaeTrainConfig = Field(default_factory=VaeTrainConfig)
    lpips: LpipsConfig = Field(
        default_factory=LpipsConfig, description="LPIPS-VGG weights: the loss term and a validation metric"
    )
    scale_batches: int = Field(default=8, ge=1, description="training batches that estimate the latent scale")
    eval_samples: int = Field(default=64, ge=1, description="validation frames scored for PSNR/SSIM")
    output: str = "models/vae"
    checkpoints: str = "checkpoints/vae"
    metrics: str = Field(default="metrics/vae.json", description="headline quality (dvc metrics)")
    report: str = Field(default="reports/vae/run.json", description="run report: speed, processes, resume")
    plots: str = "metrics/vae_loss.csv"
    grid: str = "reports/vae/reconstructions.png"

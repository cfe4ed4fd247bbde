"""Typed configuration: the one home of every setting's default, and the one way settings enter a run.

Every section forbids unknown keys: a typo in params.yaml must fail loudly with the key's dotted path,
not be silently ignored while the run uses a default. params.yaml is rendered from these classes
(:func:`render_params`), overlays and dotted overrides go through :func:`load_config` /
:func:`with_overrides`, which validate again, and each stage function takes only the sections it reads.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from diffx.data.readers.coco_folders import CocoFoldersSource
from diffx.data.readers.come15k import Come15kSource
from diffx.data.readers.diffx_folder import DiffxFolderSource
from diffx.data.readers.flir import FlirSource
from diffx.data.readers.kaist import KaistSource
from diffx.data.readers.mfnet import MfnetSource
from diffx.data.readers.sunrgbd import SunRgbdSource
from diffx.data.readers.voc_pairs import VocPairsSource
from diffx.data.spec import DatasetSpec, FrameSpec, LayoutKind, ModalitySpec
from diffx.errors import ConfigError
from diffx.section import RECORDER, Section, guessed_scalars, sections_in

OUTPUT_KEYS = frozenset(
    {"output", "report", "queue", "cache", "reports", "docs", "checkpoints", "metrics", "plots", "grid"}
)
SPEED_KEYS = frozenset({"workers", "read_ahead"})  # how many processes, or how far ahead they read: the same bytes
# each reader declares its options next to its code (diffx/data/readers/*.py)
Source = Annotated[
    CocoFoldersSource
    | VocPairsSource
    | DiffxFolderSource
    | MfnetSource
    | FlirSource
    | Come15kSource
    | SunRgbdSource
    | KaistSource,
    Field(discriminator="format"),
]


# --------------------------------------------------------------------------------------- sections
# Every default below is the bundled demo's value (a CPU run of the whole chain); params.yaml is rendered from
# these classes (`diffx params render`), so each setting has one written default and DVC sees every key.
DEMO_MODALITIES = [
    ModalitySpec(name="rgb", channels=3, bit_depth=8, units="srgb"),
    ModalitySpec(name="thermal", channels=1, bit_depth=8, units="relative_temperature"),
    ModalitySpec(name="depth", channels=1, bit_depth=16, units="millimetre", scale=0.001),
]


class DataConfig(Section):
    """What the ingested dataset is. Only ``ingest`` reads it: every later stage takes these facts from the
    manifest of the shard set it reads, so they are written once and travel with the data."""

    modalities: list[ModalitySpec] = Field(default_factory=lambda: list(DEMO_MODALITIES), min_length=1)
    classes: list[str] = Field(default_factory=lambda: ["person", "bicycle", "car"], min_length=1)
    layout_kind: LayoutKind | None = Field(
        default=None,
        description="dense layout stored with each sample: segmentation | saliency | edges (computed from rgb at "
        "ingest when the source has none) | face; null = boxes only",
    )
    layout_classes: list[str] = Field(
        default_factory=list, description="segmentation: the name of each label value, 0 first"
    )
    frame: FrameSpec = Field(default_factory=FrameSpec)

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        self.spec()  # uniqueness rules live in DatasetSpec; surface them under the 'data' key
        return self

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            modalities=tuple(self.modalities),
            classes=tuple(self.classes),
            layout_kind=self.layout_kind,
            layout_classes=tuple(self.layout_classes),
            frame=self.frame,
        )


class ShardsConfig(Section):
    rows_per_shard: int = Field(default=32, ge=1, description="demo-sized; use ~1000 for real data")
    row_group_bytes: int = Field(
        default=1 << 20,
        ge=1 << 10,
        description="image bytes a row group may hold before the next row starts a new one (a row larger than it "
        "is a group of its own): a shuffled reader fetches a whole group for one row",
    )
    png_compress_level: int = Field(default=6, ge=0, le=9)
    compression: Literal["none", "snappy", "zstd"] = Field(default="none", description="PNG bytes are compressed")


class IngestConfig(Section):
    source: Source = Field(
        default_factory=lambda: CocoFoldersSource(
            root="data/demo",
            modalities={"rgb": "rgb", "thermal": "thermal", "depth": "depth"},
            annotations={
                "train": "annotations/train.json",
                "val": "annotations/val.json",
                "test": "annotations/test.json",
            },
        ),
        description="the dataset reader and its options (format: coco_folders | voc_pairs | diffx_folder | mfnet | "
        "flir | come15k | sunrgbd | kaist); every option: docs/readers.md",
    )
    output: str = "data/canonical"
    report: str = Field(default="reports/ingest.json", description="run report: timings, the quarantine list")
    metrics: str = Field(default="metrics/ingest.json", description="headline counts (dvc metrics)")
    on_invalid: Literal["quarantine", "raise"] = "quarantine"
    max_quarantine_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    max_image_pixels: int = Field(
        default=1 << 28,
        ge=1,
        description="width x height a source image may claim before it is decoded; one over it (a decompression "
        "bomb, or a frame far larger than the dataset's) is quarantined with its size",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="processes that decode and encode images (0 = every usable core); rows and bytes are the same "
        "for any count",
    )


class DemoConfig(Section):
    output: str = "data/demo"
    seed: int = 0
    width: int = Field(default=160, ge=32)
    height: int = Field(default=128, ge=32)
    splits: dict[str, int] = Field(default_factory=lambda: {"train": 64, "val": 16, "test": 16})


class ConditioningConfig(Section):
    """What the UNet is conditioned on. Refine, the captions and ingest gates, the planner and the UNet all read
    these limits from here, so a caption that passes the gate is never truncated in training."""

    text_encoder: str = Field(
        default="minilm", description="minilm | clip:<path> | longclip:<checkpoint> (paper: Long-CLIP)"
    )
    text_tokenizer: str | None = Field(default=None, description="tokenizer folder (longclip)")
    max_tokens: int | None = Field(
        default=96, ge=8, description="caption tokens the UNet sees; null = the encoder's whole context (paper: 248)"
    )
    max_objects: int = Field(default=30, ge=1, description="layout slots of the UNet (GLIGEN: 30)")
    mask_caption_padding: bool = Field(
        default=True,
        description="hide caption padding from the UNet's cross-attention and the JME; false = attend to every "
        "position, the empty unconditional caption's too, as SD and the original DiffX code do (paper presets)",
    )

    def tokenizer(self) -> str:
        """The tokenizer that counts caption tokens exactly as the text encoder will."""
        kind, _, target = self.text_encoder.partition(":")
        if kind == "minilm":
            return "minilm"
        if self.text_tokenizer:
            return self.text_tokenizer
        if kind == "clip":
            return target
        raise ConfigError(f"conditioning.text_tokenizer: {self.text_encoder!r} needs a tokenizer folder")

    def token_limit(self) -> int:
        """Tokens a caption may have: max_tokens, capped by the encoder's own context."""
        from diffx.models.text import context_length

        context = context_length(self.text_encoder, self.text_tokenizer)
        return min(self.max_tokens or context, context)


class VaeModelConfig(Section):
    """MP-VAE architecture (diffx/models/mpvae.py); the paper config is SD v1.x's VAE."""

    block_out_channels: list[int] = Field(
        default_factory=lambda: [16, 32, 64, 64],
        min_length=1,
        description="paper: [128, 256, 512, 512] (SD v1.x); the full demo (presets/demo-full.yaml): [32, 64, 64, 64]",
    )
    layers_per_block: int = Field(default=1, ge=1, description="paper: 2")
    latent_channels: int = Field(
        default=8,
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


class VaeTrainConfig(TrainLoopConfig):
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=8, ge=1, description="global batch: all processes and accumulation steps")
    lr: float = Field(default=1e-3, gt=0)
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


class LmmConfig(Section):
    model: str = Field(description="transformers image-text-to-text model: local folder or hub id")
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(default=4, ge=1)
    max_new_tokens: int = Field(default=160, ge=1)
    max_words: int = Field(default=120, ge=5, description="word budget the prompt asks for")
    prompt: str | None = Field(default=None, description="null = diffx.caption.lmm.DEFAULT_PROMPT")


class TemplateCaptionConfig(Section):
    """The offline captioner's words. Refine (its fallback captions) and plan (captions of edited layouts) read
    this section too, so every template caption of a run names the same scene."""

    scene: str | None = Field(
        default=None,
        description="the place the captions name ('street scene', 'indoor scene', 'face', 'bedroom', any text); "
        "null = chosen from data.classes (street classes -> street scene, furniture -> indoor scene, else scene)",
    )


class CaptionConfig(Section):
    data: str = "data/canonical"
    backend: Literal["template", "lmm"] = Field(default="template", description="template (offline) | lmm")
    template: TemplateCaptionConfig = Field(default_factory=TemplateCaptionConfig)
    lmm: LmmConfig | None = Field(default=None, description="e.g. {model: llava-hf/llava-1.5-7b-hf, batch_size: 8}")
    cache: str | None = Field(
        default="cache/captions.sqlite", description="reruns never recompute a caption; null disables"
    )
    batch_size: int = Field(default=32, ge=1, description="samples read and captioned together")
    output: str = "data/captions.parquet"
    report: str = "reports/caption.json"

    @model_validator(mode="after")
    def _lmm_needs_model(self) -> CaptionConfig:
        if self.backend == "lmm" and self.lmm is None:
            raise ValueError("backend 'lmm' needs a caption.lmm section with a model")
        return self


class RefineConfig(Section):
    """Token limits come from the conditioning section (the UNet's text encoder), never typed here."""

    data: str = "data/canonical"
    captions: str = "data/captions.parquet"
    decisions: str = Field(default="reviews/decisions.jsonl", description="human decisions, in git, re-applied")
    near_duplicate: float = Field(default=0.9, gt=0, le=1, description="word-trigram Jaccard that flags a pair")
    near_duplicate_when: Literal["always", "layouts_differ"] = Field(
        default="layouts_differ",
        description="flag a near-duplicate pair always, or only when the two layouts differ in what a caption "
        "states (the objects per class): a fixed camera's frames with the same objects rightly share a caption",
    )
    output: str = "data/captioned"
    queue: str = "reviews/queue.jsonl"
    report: str = "reports/refine.json"


class UnetModelConfig(Section):
    """DiffX-UNet (diffx/models/unet.py). The paper config is SD v1.x's UNet, frozen, from init_from_sd."""

    block_out_channels: list[int] = Field(
        default_factory=lambda: [32, 64, 64],
        min_length=1,
        description="paper: SD v1.x's [320, 640, 1280, 1280]; the full demo (presets/demo-full.yaml): [64, 128, 128]",
    )
    down_block_types: list[str] = Field(
        default_factory=lambda: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    )
    up_block_types: list[str] = Field(default_factory=lambda: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
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
    steps: int = Field(default=400, ge=1)
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


class FeatureConfig(Section):
    """The image features behind FID / KID / precision-recall (diffx/eval/features.py)."""

    extractor: Literal["random-conv", "inception"] = Field(
        default="random-conv",
        description="random-conv: a seeded, untrained conv net (offline; Naeem et al. 2020); inception: the FID "
        "InceptionV3 (diffx/models/inception.py, pytorch-fid's features) from a local weights file",
    )
    inception_weights: str | None = Field(
        default=None, description="local pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID weights)"
    )
    dims: int = Field(default=256, ge=8, description="random-conv feature width")
    seed: int = 0
    batch_size: int = Field(default=32, ge=1)


class DetectorModelConfig(Section):
    """The compact CenterNet-style detector of diffx/models/detector.py (no torchvision)."""

    inputs: list[str] | None = Field(default=None, description="modalities stacked as input; null = all")
    width: int = Field(default=16, ge=8, description="channels of the first stage (x1, x2, x4, x4 deeper)")
    stride: Literal[4] = 4
    max_detections: int = Field(default=100, ge=1)
    score_threshold: float = Field(default=0.01, ge=0, lt=1)


class DetectorTrainConfig(TrainLoopConfig):
    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=16, ge=1, description="global batch: all processes and accumulation steps")
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    log_every: int = Field(default=20, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    hflip: bool = True
    size_weight: float = Field(default=0.1, ge=0, description="L1 weight of the box size head (CenterNet: 0.1)")


class LayoutNetConfig(Section):
    """The small net that reads a dense layout back from images (segmentation, saliency) for the evaluation."""

    width: int = Field(default=16, ge=8, description="channels of the first stage (x1, x2, x4 deeper)")


class LayoutNetTrainConfig(TrainLoopConfig):
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=16, ge=1, description="global batch: all processes and accumulation steps")
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    log_every: int = Field(default=20, ge=1)
    checkpoint_every: int = Field(default=150, ge=1)
    hflip: bool = True


class EvaluateConfig(Section):
    """Stage evaluate: realism, cross-modal alignment, layout fidelity and the downstream detector gain."""

    real: str = "data/canonical"
    reference_split: str = Field(default="train", description="real split the generated set is compared with")
    test_split: str = Field(default="test", description="real split the detectors are scored on")
    synthetic: str = "data/synthetic"
    synthetic_split: str = "train"
    paired_split: str | None = Field(
        default=None,
        description="real split the synthetic set was planned from one per item (plan.mode one_per_item): PSNR, "
        "SSIM and LPIPS per modality of each sample against its item (the paper's protocol); null = off",
    )
    lpips: LpipsConfig = Field(default_factory=LpipsConfig, description="LPIPS-VGG weights for the paired metrics")
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    kid_subset_size: int = Field(default=50, ge=2)
    kid_subsets: int = Field(default=50, ge=1)
    nearest_k: int = Field(default=3, ge=1, description="k of the k-NN manifolds for precision / recall")
    align_max_shift: int = Field(default=4, ge=0, description="px searched when finding the best registration")
    control_shift: int = Field(
        default=6, ge=0, description="px the misaligned control set is shifted by (RGB one way, X the other); 0 = off"
    )
    detector: DetectorModelConfig = Field(default_factory=DetectorModelConfig)
    detector_train: DetectorTrainConfig = Field(default_factory=DetectorTrainConfig)
    layout_net: LayoutNetConfig = Field(
        default_factory=LayoutNetConfig,
        description="dense layouts only: the segmentation / saliency net that measures layout agreement",
    )
    layout_net_train: LayoutNetTrainConfig = Field(default_factory=LayoutNetTrainConfig)
    grid_samples: int = Field(default=6, ge=0)
    device: str = "auto"
    curated: str = Field(default="data/curated", description="the curate stage's kept rows (recipes of pool curated)")
    real_detector: str | None = Field(
        default="models/detector_real",
        description="the curate stage's real-data detector: reused as the first seed's real-only model when it was "
        "trained with these detector settings on this reference split (else trained here); null = always train",
    )
    detector_seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="every recipe and real-only train once per seed; gains are paired per seed (mean, and a 95 % "
        "Student-t interval from two seeds on); the first seed's real model also "
        "scores layout fidelity",
    )
    recipes: list[RecipeConfig] = Field(
        default_factory=lambda: [
            RecipeConfig(name="synthetic_1x"),
            RecipeConfig(name="curated_1x", pool="curated"),
            RecipeConfig(name="real_again_1x", pool="real"),
        ],
        description="ways of adding synthetic data, each scored against real-only per seed and class",
    )
    output: str = Field(default="models/detector", description="the detectors, one folder per recipe and seed")
    checkpoints: str = "checkpoints/detector"
    metrics: str = Field(default="metrics/eval.json", description="headline numbers (dvc metrics)")
    report: str = Field(default="reports/eval.json", description="every measurement, per set and modality")
    plots: str = Field(default="metrics/eval", description="folder of CSVs for dvc plots (PR curves, losses)")
    grid: str = "reports/eval/samples.png"

    @model_validator(mode="after")
    def _distinct_recipes(self) -> EvaluateConfig:
        names = [r.name for r in self.recipes]
        for name in names:
            if name == "real" or "@" in name or "/" in name or names.count(name) > 1:
                raise ValueError(
                    f"evaluate.recipes: name {name!r} must be unique, not 'real', without '@' or '/' (it names a "
                    "model folder and a metrics column)"
                )
        if len(set(self.detector_seeds)) != len(self.detector_seeds):
            raise ValueError(f"evaluate.detector_seeds: {self.detector_seeds} repeats a seed")
        return self


class CurateRulesConfig(Section):
    """Which generated samples are kept. Thresholds drop first; then the best share of each sample group (by
    the class with most planned boxes, empty layouts a group of their own) is kept, so the plan's class mix holds."""

    min_recall: float | None = Field(
        default=None, ge=0, le=1, description="drop a sample whose planned boxes the real detector finds less often"
    )
    max_outlier: float | None = Field(
        default=None, gt=0, description="drop a sample whose realism outlier score is above this; null = off"
    )
    max_shift_px: int | None = Field(
        default=None, ge=0, description="drop a sample whose RGB-X best edge alignment is further off; null = off"
    )
    keep_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="of each group, the best-scored share is kept (1 = every row that passes the rules); with plan "
        "boxes (curate.labels) keeping the better half drops the rows whose objects strayed furthest",
    )


class CurateLabelsConfig(Section):
    """Which boxes a kept row carries. The plan's boxes say where the generator was asked to put objects, not
    where it did: where the two differ, a detector trained on plan boxes learns objects that are not there and
    background where objects are. Labels that describe the image (the detector's finds, or the planned boxes it
    confirms) follow what was drawn."""

    source: Literal["plan", "verified", "detector"] = Field(
        default="detector",
        description="plan: the boxes the sample was generated from, unchanged; verified: the planned boxes the "
        "real-data detector found (same class, IoU >= curate.iou), plus its finds of at least adopt_score where "
        "no planned box lies; detector: the detector's finds of at least curate.score_threshold (pseudo-labels)",
    )
    adopt_score: float | None = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="verified: a find this confident that overlaps no planned box joins the row's boxes; null = never",
    )
    adopt_max_iou: float = Field(
        default=0.3, ge=0, lt=1, description="verified: 'overlaps no planned box' = its IoU with each is below this"
    )


class CurateConfig(Section):
    """Stage curate: score every generated sample, keep the ones whose objects sit where the plan put them, with
    boxes that describe what the image shows (curate.labels).

    The real data, the real-data detector, the features and the alignment search are the evaluation's
    (evaluate.real and reference_split, evaluate.detector, evaluate.detector_train with the first of
    evaluate.detector_seeds, evaluate.features), so a sample is judged as it is measured; evaluate reuses the
    detector."""

    synthetic: str = "data/synthetic"
    split: str = "train"
    score_threshold: float = Field(
        default=0.3, gt=0, lt=1, description="the detector's confidence a find needs to hit a planned box"
    )
    iou: float = Field(default=0.5, gt=0, le=1, description="IoU a same-class find needs to hit a planned box")
    rules: CurateRulesConfig = Field(default_factory=CurateRulesConfig)
    labels: CurateLabelsConfig = Field(default_factory=CurateLabelsConfig)
    output: str = Field(
        default="data/curated",
        description="the kept rows as a shard set: images, captions and provenance byte for byte, boxes per "
        "curate.labels",
    )
    scores: str = Field(default="reports/curate/scores.parquet", description="every sample's scores and verdict")
    report: str = Field(default="reports/curate.json", description="kept per group, score summaries, timings")
    detector: str = Field(default="models/detector_real", description="the real-data detector (safetensors)")
    checkpoints: str = "checkpoints/curate"


class RecipeConfig(Section):
    """One way of adding synthetic data to a detector's real training set, scored against real-only."""

    name: str = Field(description="the label in metrics/eval.json and the recipe table")
    ratio: float = Field(default=1.0, gt=0, description="synthetic rows drawn per real training row (seeded)")
    pool: Literal["synthetic", "curated", "real"] = Field(
        default="synthetic",
        description="where the added rows are drawn from: synthetic (every generated row), curated (the curate "
        "stage's rows, with its boxes), or real (the real training rows again: a control that adds no new image, "
        "so a synthetic recipe helps only as far as it beats it)",
    )
    mode: Literal["mixed", "pretrain_finetune"] = Field(
        default="mixed",
        description="mixed: one run on real + synthetic; pretrain_finetune: a pretraining run on synthetic, then "
        "the detector's full schedule on real only, starting from it",
    )
    pretrain_share: float = Field(
        default=0.5, gt=0, le=4, description="pretrain_finetune only: pretraining steps as a share of the detector's"
    )


class ImageGateConfig(Section):
    """Thresholds on per-sample image and box statistics (pixel values scaled to [0, 1]). The object count is
    limited by conditioning.max_objects."""

    min_std: float = Field(default=0.005, ge=0, description="below this a modality is blank / constant")
    min_nonzero_fraction: float = Field(default=0.01, ge=0, le=1, description="e.g. a depth map of zeros")
    max_hist_distance: float = Field(
        default=0.25, ge=0, le=1, description="W1 distance of a grey modality's histogram to the set's median"
    )
    min_size: int = Field(default=16, ge=1)
    min_box_area: float = Field(default=4.0, ge=0, description="px^2; smaller boxes are label noise")
    max_box_aspect: float = Field(default=20.0, ge=1)
    min_rows: int = Field(default=1, ge=0)
    duplicate_box_iou: float = Field(
        default=0.9, gt=0, le=1, description="two same-class boxes overlapping more than this are one object twice"
    )
    max_misregistration_px: float = Field(
        default=3.0, ge=0, description="a modality's best edge alignment with RGB this far off (px) is misregistered"
    )
    min_registration_gain: float = Field(
        default=0.1,
        ge=0,
        description="edge correlation a shift must gain over no shift to count (flat peaks on weak edges do not)",
    )
    min_registration_agreement: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="a modality pair is judged only where this share of samples peaks at one common offset (its "
        "edges correspond); RGB vs a noisy depth map may not",
    )
    max_mirror_gain: float = Field(
        default=0.15, description="edge correlation gained by mirroring RGB: above it, one modality is mirrored"
    )
    max_rank_corr: float = Field(
        default=0.98, le=1, description="Spearman correlation of two modalities above this: one image in two slots"
    )
    max_colour_outlier: float = Field(
        default=1.0,
        gt=0,
        description="how far (in band widths) an RGB image's red-minus-blue balance may lie outside the reference's "
        "5-95% band: BGR stored as RGB lands far outside it in sets with a consistent colour cast",
    )
    min_colour_range: float = Field(default=0.03, gt=0, description="floor of that band's width (uniform sets)")
    max_channel_swap: float | None = Field(
        default=2.0,
        gt=0,
        description="how many times more typical of the set an RGB frame may look with red and blue exchanged "
        "(one frame stored as BGR); judged in sets of 20 frames or more; null = not judged",
    )
    max_impulse_fraction: float | None = Field(
        default=0.03,
        ge=0,
        le=1,
        description="share of pixels at full or zero that jump from their 3x3 neighbourhood's median by a quarter "
        "of the range (salt-and-pepper noise from a failing sensor or transfer); null = not judged",
    )
    min_box_content: float = Field(
        default=0.3,
        description="box-vs-surroundings contrast as a share of the reference set's typical one (1 = typical, "
        "0 = bare background): boxes moved off their objects score below it",
    )
    min_box_sign_reliability: float = Field(
        default=2.0,
        ge=0,
        description="a modality's box contrast counts when its median is this many spreads from 0 in the "
        "reference (warm objects in thermal, near ones in depth)",
    )
    max_cross_split_similarity: float = Field(
        default=0.985,
        gt=0,
        le=1,
        description="16x16 fingerprint cosine of two samples in different splits above this: train/test leakage",
    )


class GeneratedGateConfig(ImageGateConfig):
    """Generated shards: the image checks, plus closeness to the real data and signs the layout was honoured."""

    max_hist_distance: float = Field(default=0.3, ge=0, le=1, description="W1 to the real data's median histogram")
    reference: str = Field(default="reports/quality/ingest.json", description="the ingest gate's report")
    max_mean_shift: float = Field(default=0.15, ge=0, le=1, description="|generated - real| mean of a modality")
    max_outlier_share: float = Field(
        default=0.1, ge=0, le=1, description="share of generated samples allowed past max_hist_distance"
    )
    honoured: dict[str, Literal["positive", "negative"]] = Field(
        default_factory=lambda: {"thermal": "positive"},
        description="sign of (inside boxes - frame median) when objects are where the layout put them; depth is "
        "no reliable sign in street scenes (far objects stand behind the near road)",
    )
    min_contrast: float = Field(default=0.01, ge=0)
    min_honoured_share: float = Field(default=0.5, ge=0, le=1)
    max_impulse_fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="as at ingest; null here: a briefly trained model's frames are grainy without any defect",
    )


class CaptionGateConfig(Section):
    """The token ceiling and tokenizer come from the conditioning section."""

    min_tokens: int = Field(default=3, ge=1)
    sources: list[str] = Field(default_factory=lambda: ["template", "human", "lmm:*"])
    max_tokens_per_word: float = Field(
        default=2.2, gt=0, description="tokenizer pieces per word; garbage text splits into many more"
    )
    max_conflict_share: float = Field(
        default=0.0, ge=0, le=1, description="share of captions allowed to contradict their layout (classes, counts)"
    )
    max_unresolved_share: float = Field(
        default=0.05, ge=0, le=1, description="share of captions refine flagged that may still await review"
    )


class VaeGateConfig(Section):
    min_psnr: dict[str, float] = Field(default_factory=dict, description="modality -> PSNR floor (dB)")
    default_min_psnr: float = Field(default=15.0, description="dB on the validation split; raise it for real data")
    min_ssim: float = Field(default=0.3, ge=-1, le=1)
    min_gain_over_baseline_db: float | None = Field(
        default=-1.0,
        description="dB a modality's PSNR must reach above the latent-resolution baseline (the frame averaged down "
        "to the latent grid and back) on the same validation frames; null = fixed floors only. -1: a latent whose "
        "few channels carry several modalities may trail it a little, while a model that learned nothing trails "
        "it by many dB",
    )


class QualityConfig(Section):
    reports: str = Field(default="reports/quality", description="full gate reports (outcomes, reference stats)")
    metrics: str = Field(default="metrics/quality", description="each gate's verdict and counts (dvc metrics)")
    docs: str | None = Field(default="reports/quality/docs", description="great_expectations data docs (HTML)")
    max_failed_rows_shown: int = Field(default=20, ge=1)
    workers: int = Field(default=0, ge=0, description="decode threads; 0 = one per CPU")
    ingest: ImageGateConfig = Field(default_factory=ImageGateConfig)
    captions: CaptionGateConfig = Field(default_factory=CaptionGateConfig)
    vae: VaeGateConfig = Field(default_factory=VaeGateConfig)
    generated: GeneratedGateConfig = Field(default_factory=GeneratedGateConfig)


class DiffxConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    conditioning: ConditioningConfig = Field(default_factory=ConditioningConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    refine: RefineConfig = Field(default_factory=RefineConfig)
    vae: VaeConfig = Field(default_factory=VaeConfig)
    unet: UnetConfig = Field(default_factory=UnetConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @model_validator(mode="after")
    def _name_sections(self) -> DiffxConfig:
        _name_tree(self, "")
        return self


def _name_tree(section: Section, prefix: str) -> None:
    """Give every nested section its dotted path: error messages and the read recorder name keys by it."""
    section._dotted = prefix
    for name in type(section).model_fields:
        value = section.__dict__[name]
        if isinstance(value, Section):
            _name_tree(value, f"{prefix}{name}.")
        elif isinstance(value, list):  # a list of sections (evaluate.recipes): each item's keys under the list's
            for item in value:
                if isinstance(item, Section):
                    _name_tree(item, f"{prefix}{name}.")


def section_hash(*sections: Section, extra: dict[str, Any] | None = None) -> str:
    """A short digest of the given sections (and ``extra`` values derived from others): provenance for
    everything a stage writes.

    Keys named in OUTPUT_KEYS are left out: where a result is written never changes what it is; nor does the
    number of processes that wrote it (SPEED_KEYS).
    """
    chosen: list[Any] = [extra] if extra else []
    for section in sections:
        dumped = section.model_dump(mode="json")  # recorded as a read of every key (diffx/section.py)
        chosen.append({k: v for k, v in dumped.items() if k not in OUTPUT_KEYS | SPEED_KEYS})
    text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _where(loc: str, lines: dict[str, str]) -> str:
    """`` (params.yaml:12)`` for a dotted key (or its nearest parent) the files set, else nothing."""
    parts = loc.split(".")
    for end in range(len(parts), 0, -1):
        if (found := lines.get(".".join(parts[:end]))) is not None:
            return f" ({found})"
    return ""


def _format_validation_error(source: str, err: ValidationError, lines: dict[str, str]) -> str:
    out = [f"{source}: invalid configuration"]
    formats = {
        c.model_fields["format"].default for c in sections_in(IngestConfig.model_fields["source"].annotation, {})
    }
    for item in err.errors():
        parts = [str(p) for p in item["loc"]]
        # the reader union adds its tag to the path (ingest.source.voc_pairs.extension): say it as it is written
        parts = [p for i, p in enumerate(parts) if not (i and parts[i - 1] == "source" and p in formats)]
        loc = ".".join(parts)
        if item["type"] == "extra_forbidden":
            out.append(f"  {loc}: unknown key{_where(loc, lines)}")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            message = item["msg"].removeprefix("Value error, ")
            out.append(f"  {loc}: {message}{shown}{_where(loc, lines)}")
    return "\n".join(out)


def parse_config(raw: dict[str, Any], source: str = "<params>", lines: dict[str, str] | None = None) -> DiffxConfig:
    """``lines``: dotted key -> 'file:line', so an error points into the file that set the key."""
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    if guessed := guessed_scalars(DiffxConfig, raw):
        problems = [f"  {key}: {problem}{_where(key, lines)}" for key, problem in guessed]
        raise ConfigError("\n".join([f"{source}: invalid configuration", *problems]))
    try:
        with RECORDER.pause():
            config = DiffxConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err, lines)) from None
    return config


def key_lines(path: str | Path) -> dict[str, str]:
    """Dotted key -> 'file:line' for every mapping key of a params file (read after read_params accepted it)."""
    found: dict[str, str] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}{key_node.value}"
                found[dotted] = f"{path}:{key_node.start_mark.line + 1}"
                walk(value_node, dotted + ".")

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return found
    if root is not None:
        walk(root, "")
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that a mapping repeats: PyYAML keeps the last silently, so a second
    ``vae:`` block pasted below the first would replace it whole."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a params YAML file (e.g. params.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merge key by key, anything else replaces.

    A mapping naming another ``format`` (a reader) is another kind of thing: it replaces the base's whole, so a
    preset's FLIR source never inherits the demo reader's options; an empty mapping clears (``class_targets: {}``).
    """
    out = dict(base)
    for key, value in overlay.items():
        current = out.get(key)
        kind = current.get("format") if isinstance(current, dict) else None
        if isinstance(value, dict) and value and isinstance(current, dict) and value.get("format", kind) == kind:
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


def dotted_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"plan.num_samples": 8}`` -> ``{"plan": {"num_samples": 8}}`` (what ``dvc exp run -S`` writes)."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is set to a value and a section at once")
        node[leaf] = value
    return nested


def load_config(
    path: str | Path = "params.yaml",
    overlays: list[str | Path] | tuple[str | Path, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> DiffxConfig:
    """The one way settings enter a run: a params file, then overlay files (presets), then dotted overrides
    (CLI flags, flow parameters), validated together so an override can never skip a check."""
    raw = read_params(path)
    sources = [str(path)]
    lines = key_lines(path)
    for overlay in overlays:
        raw = merge(raw, read_params(overlay))
        sources.append(str(overlay))
        lines.update(key_lines(overlay))
    if overrides:
        raw = merge(raw, dotted_overrides(overrides))
        sources.append("overrides " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
        lines.update({key: "--set" for key in overrides})
    return parse_config(raw, " + ".join(sources), lines)


def with_overrides(config: DiffxConfig, overrides: dict[str, Any]) -> DiffxConfig:
    """A validated copy of ``config`` with dotted overrides applied (never mutate a loaded config)."""
    if not overrides:
        return config
    with RECORDER.pause():
        raw = merge(config.model_dump(mode="json"), dotted_overrides(overrides))
    return parse_config(raw, "overrides " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))


# ------------------------------------------------------------------------------------- rendering
RENDER_HEADER = """\
# diffx parameters: one section per stage, typed and checked by diffx/config.py (unknown keys fail).
# Rendered from the typed defaults by `diffx params render` (make params): edit values here freely;
# `diffx params check params.yaml` validates a file without running anything. Defaults run the whole chain on
# the bundled demo data on a CPU.
"""


def _inline(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _render(section: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        comment = f"  # {field.description}" if field.description else ""
        if isinstance(value, BaseModel):  # a section, or a fact model set in params (data.frame): a block
            lines.append(f"{pad}{name}:{comment}")
            lines.extend(_render(value, indent + 1))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel | dict):
            lines.append(f"{pad}{name}:{comment}")
            lines.extend(f"{pad}  - {_inline(_plain(item))}" for item in value)
        else:
            lines.append(f"{pad}{name}: {_inline(_plain(value))}{comment}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    return value


def render_params(config: DiffxConfig) -> str:
    """Every key of ``config`` as YAML, with each field's description as its comment."""
    out = [RENDER_HEADER]
    for name in type(config).model_fields:
        section = getattr(config, name)
        doc = " ".join((type(section).__doc__ or "").strip().split("\n\n")[0].split())
        out.append("")
        if doc:
            out.extend(textwrap.wrap(f"{name}: {doc}", 114, initial_indent="# ", subsequent_indent="# "))
        out.append(f"{name}:")
        out.extend(_render(section, 1))
    text = "\n".join(out) + "\n"
    if yaml.safe_load(text) != config.model_dump(mode="json"):  # a rendering bug must never change a value
        raise AssertionError("rendered params do not read back as the same values")
    return text

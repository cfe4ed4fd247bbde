"""Typed configuration loaded from ``params.yaml``.

Every section forbids unknown keys: a typo in params.yaml must fail loudly with the key's dotted path,
not be silently ignored while the run uses a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.errors import ConfigError

OUTPUT_KEYS = frozenset(
    {"output", "report", "queue", "cache", "reports", "docs", "checkpoints", "metrics", "plots", "grid"}
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- source readers' options
class CocoFoldersSource(Section):
    """Paired image folders (one per modality, same file names) plus one COCO JSON per split."""

    format: Literal["coco_folders"] = "coco_folders"
    root: str
    modalities: dict[str, str] = Field(description="modality name -> folder (relative to root)")
    annotations: dict[str, str] = Field(description="split -> COCO JSON (relative to root)")
    filename_template: str = Field(
        default="{file_name}", description="maps a COCO file_name to the file on disk, e.g. 'M3FD_{file_name}'"
    )
    category_map: dict[str, str] = Field(default_factory=dict, description="source class -> our class")
    ignore_categories: list[str] = Field(default_factory=list)


class VocPairsSource(Section):
    """LLVIP / M3FD originals: paired folders with one Pascal VOC XML per pair, shared by all modalities."""

    format: Literal["voc_pairs"] = "voc_pairs"
    root: str
    modalities: dict[str, str] = Field(description="modality -> folder; '{split}' is substituted")
    annotations: str = "Annotations"
    splits: list[str] = Field(default_factory=lambda: ["train"])
    extension: str = ".jpg"
    one_based: bool = Field(default=True, description="VOC pixel indices start at 1 (shifted to 0-based)")
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


class DiffxFolderSource(Section):
    """The original DiffX layout: Main/<split>.txt, JPEGImages_<MOD>/<id>.jpg, labels/, sobel/, caption/."""

    format: Literal["diffx_folder"] = "diffx_folder"
    root: str
    modalities: dict[str, str] = Field(description="modality -> the <MOD> suffix of JPEGImages_<MOD>")
    splits: list[str] = Field(default_factory=lambda: ["train", "val"])
    extension: str = ".jpg"
    labels: Literal["yolo", "label_png", "saliency", "none"] = "yolo"
    label_classes: list[str] = Field(
        default_factory=lambda: ["person", "bicycle", "car"],
        description="class names by id in the label files (YOLO ids or label-PNG pixel values)",
    )
    box_classes: list[str] | None = Field(
        default=None, description="label_png: which classes become boxes (connected components)"
    )
    min_component_pixels: int = 16
    layout: Literal["none", "sobel", "labels"] = "none"
    captions: bool = True
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


class MfnetSource(Section):
    """MFNet: 4-channel PNG (RGB + thermal in channel 3) and a 9-class label PNG per id."""

    format: Literal["mfnet"] = "mfnet"
    root: str
    splits: list[str] = Field(default_factory=lambda: ["train", "val", "test"])
    labels: bool = True
    box_classes: list[str] = Field(default_factory=lambda: ["car", "person", "bike"])
    min_component_pixels: int = 16
    category_map: dict[str, str] = Field(default_factory=lambda: {"bike": "bicycle"})
    ignore_categories: list[str] = Field(default_factory=list)


class FlirSource(Section):
    """FLIR ADAS v2. RGB and thermal are not pixel-aligned, so pairing and alignment are explicit."""

    format: Literal["flir"] = "flir"
    root: str
    splits: dict[str, str] = Field(
        default_factory=lambda: {"test": "video_{modality}_test"},
        description="split -> folder pattern; '{modality}' becomes rgb or thermal",
    )
    pairing: Literal["video_map", "thermal_only"] = "video_map"
    rgb_crop: tuple[int, int, int, int] | None = Field(
        default=None,
        description="x0,y0,x1,y1 of the RGB frame that covers the thermal field of view; required with rgb",
    )
    category_map: dict[str, str] = Field(default_factory=lambda: {"bike": "bicycle"})
    ignore_categories: list[str] = Field(default_factory=list)


class Come15kSource(Section):
    """COME15K: RGB + depth + saliency GT, COCO instance JSON with the single class 'foreground'."""

    format: Literal["come15k"] = "come15k"
    root: str
    splits: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "train": {
                "rgb": "train/imgs_right",
                "depth": "train/depths",
                "saliency": "train/gt_right",
                "annotations": "annotations/COME15K-Train.json",
            },
        }
    )
    depth_extension: str = ".png"
    saliency_extension: str = ".png"
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


class SunRgbdSource(Section):
    """SUN RGB-D style: RGB + 16-bit depth with rotated bits; optional VoteNet 2D boxes."""

    format: Literal["sunrgbd"] = "sunrgbd"
    root: str
    splits: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "train": {"rgb": "train/color", "depth": "train_depth"},
            "val": {"rgb": "val/color", "depth": "val_depth"},
        }
    )
    labels: str | None = Field(default=None, description="folder of VoteNet label txt files (6-digit ids)")
    decode_depth_bits: bool = Field(default=True, description="undo SUN RGB-D's 3-bit rotation -> millimetres")
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


Source = Annotated[
    CocoFoldersSource | VocPairsSource | DiffxFolderSource | MfnetSource | FlirSource | Come15kSource | SunRgbdSource,
    Field(discriminator="format"),
]


# --------------------------------------------------------------------------------------- sections
class DataConfig(Section):
    modalities: list[ModalitySpec] = Field(min_length=1)
    classes: list[str] = Field(min_length=1)
    layout_kind: Literal["segmentation", "saliency", "edges", "face"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        self.spec()  # uniqueness rules live in DatasetSpec; surface them under the 'data' key
        return self

    def spec(self) -> DatasetSpec:
        return DatasetSpec(modalities=tuple(self.modalities), classes=tuple(self.classes), layout_kind=self.layout_kind)


class ShardsConfig(Section):
    rows_per_shard: int = Field(default=512, ge=1)
    row_group_bytes: int = Field(default=32 << 20, ge=1 << 16, description="target row-group size")
    png_compress_level: int = Field(default=6, ge=0, le=9)
    compression: Literal["none", "snappy", "zstd"] = "none"


class IngestConfig(Section):
    source: Source
    output: str = "data/canonical"
    report: str = Field(default="reports/ingest.json", description="run report: timings, the quarantine list")
    metrics: str = Field(default="metrics/ingest.json", description="headline counts (dvc metrics)")
    on_invalid: Literal["quarantine", "raise"] = "quarantine"
    max_quarantine_fraction: float = Field(default=0.05, ge=0.0, le=1.0)


class DemoConfig(Section):
    output: str = "data/demo"
    seed: int = 0
    width: int = Field(default=160, ge=32)
    height: int = Field(default=128, ge=32)
    splits: dict[str, int] = Field(default_factory=lambda: {"train": 64, "val": 16, "test": 16})


class VaeModelConfig(Section):
    """MP-VAE architecture (diffx/models/mpvae.py); the paper config is SD v1.x's VAE."""

    block_out_channels: list[int] = Field(default_factory=lambda: [128, 256, 512, 512], min_length=1)
    layers_per_block: int = Field(default=2, ge=1)
    latent_channels: int = Field(default=4, ge=1)
    norm_num_groups: int = Field(default=32, ge=1)
    use_pyramid: bool = True
    replicate_grey: bool = Field(default=False, description="feed 1-channel modalities as 3 equal channels")
    mid_block_add_attention: bool = True
    init_from_sd: str | None = Field(default=None, description="diffusers AutoencoderKL folder (SD v1.x)")

    @model_validator(mode="after")
    def _groups_divide_widths(self) -> VaeModelConfig:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every block width, not {bad}")
        return self


class TrainLoopConfig(Section):
    """What every training loop shares (diffx/train/loop.py): schedule, precision, EMA, checkpoints."""

    seed: int = 0
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=8, ge=1, description="global batch: all processes and accumulation steps")
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    ema_decay: float | None = Field(default=0.999, gt=0, lt=1)
    mixed_precision: Literal["no", "bf16"] = Field(default="bf16", description="bf16 autocast, CUDA only")
    channels_last: bool = False
    device: str = "auto"
    num_workers: int = Field(default=0, ge=0)
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)


class VaeTrainConfig(TrainLoopConfig):
    crop: int | None = Field(default=None, ge=8, description="random square crop (px); None = whole frames")
    hflip: bool = Field(default=True, description="random horizontal flip, seeded per sample")
    kl_weight: float = Field(default=1e-6, ge=0)
    modality_weights: dict[str, float] = Field(default_factory=dict, description="loss weight per modality")
    lpips_weights: str | None = Field(default=None, description="local LPIPS-VGG safetensors; None = no LPIPS")


class VaeConfig(Section):
    data: str = "data/canonical"
    train_split: str = "train"
    val_split: str = "val"
    model: VaeModelConfig = VaeModelConfig()
    train: VaeTrainConfig = VaeTrainConfig()
    scale_batches: int = Field(default=8, ge=1, description="batches used to estimate the latent scale")
    eval_samples: int = Field(default=64, ge=1)
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
    prompt: str | None = Field(default=None, description="None = diffx.caption.lmm.DEFAULT_PROMPT")


class CaptionConfig(Section):
    data: str = "data/canonical"
    backend: Literal["template", "lmm"] = "template"
    lmm: LmmConfig | None = None
    cache: str | None = Field(default="cache/captions.sqlite", description="None disables the caption cache")
    batch_size: int = Field(default=32, ge=1, description="samples read and captioned together")
    output: str = "data/captions.parquet"
    report: str = "reports/caption.json"

    @model_validator(mode="after")
    def _lmm_needs_model(self) -> CaptionConfig:
        if self.backend == "lmm" and self.lmm is None:
            raise ValueError("backend 'lmm' needs a caption.lmm section with a model")
        return self


class RefineConfig(Section):
    data: str = "data/canonical"
    captions: str = "data/captions.parquet"
    decisions: str = "reviews/decisions.jsonl"
    tokenizer: str = Field(default="minilm", description="tokenizer of the UNet's text encoder")
    max_tokens: int = Field(default=248, ge=8)
    near_duplicate: float = Field(default=0.9, gt=0, le=1, description="word-trigram Jaccard that flags a pair")
    output: str = "data/captioned"
    queue: str = "reviews/queue.jsonl"
    report: str = "reports/refine.json"


class UnetModelConfig(Section):
    """DiffX-UNet (diffx/models/unet.py). The paper config is SD v1.x's UNet, frozen, from init_from_sd."""

    block_out_channels: list[int] = Field(default_factory=lambda: [320, 640, 1280, 1280], min_length=1)
    down_block_types: list[str] = Field(
        default_factory=lambda: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    )
    up_block_types: list[str] = Field(
        default_factory=lambda: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    )
    layers_per_block: int = Field(default=2, ge=1)
    attention_head_dim: int = Field(default=8, ge=1)
    norm_num_groups: int = Field(default=32, ge=1)
    layout: Literal["boxes", "dense"] = "boxes"
    init_from_sd: str | None = Field(default=None, description="SD v1.x pipeline or UNet folder (diffusers)")
    freeze_base: bool = Field(default=True, description="with init_from_sd: train only fusers, tokenizer, JME")
    fuser_gate_init: float = Field(
        default=0.0,
        description="initial gamma of every GLIGEN fuser gate (tanh(gamma) scales the layout path). 0 = GLIGEN's, "
        "so a pretrained base starts unchanged; a UNet trained from scratch has nothing to preserve, and at 0 the "
        "layout tokenizer and JME get no gradient until the gates move (the demo's stayed within +-0.06 in 1,500 "
        "steps)",
    )

    @model_validator(mode="after")
    def _blocks_match(self) -> UnetModelConfig:
        if not len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types):
            raise ValueError("block_out_channels, down_block_types and up_block_types need the same length")
        return self


class UnetTrainConfig(TrainLoopConfig):
    caption_dropout: float = Field(default=0.5, ge=0, le=1, description="per sample: the caption becomes ''")
    layout_dropout: float = Field(default=0.1, ge=0, le=1, description="per sample: every layout slot is null")
    min_snr_gamma: float | None = Field(default=None, gt=0, description="min-SNR loss weighting (e.g. 5)")
    gradient_checkpointing: bool = False
    cache_conditioning: bool = Field(
        default=False,
        description="encode every training image (VAE posterior) and caption (text states) once up front instead of "
        "every step; memory grows with the split, so for small and medium sets",
    )
    preview_every: int = Field(default=0, ge=0, description="steps between preview grids; 0 = only at the end")


class SamplerConfig(Section):
    sampler: Literal["ddim", "dpmsolver++", "unipc", "pndm"] = "ddim"
    steps: int = Field(default=50, ge=1)
    guidance: float = Field(default=5.0, ge=0)


class UnetConfig(Section):
    data: str = "data/captioned"
    train_split: str = "train"
    preview_split: str = "val"
    vae: str = "models/vae"
    text_encoder: str = Field(default="minilm", description="minilm | clip:<path> | longclip:<checkpoint>")
    text_tokenizer: str | None = Field(default=None, description="tokenizer folder for longclip")
    max_tokens: int = Field(default=77, ge=8, description="caption tokens the UNet sees (Long-CLIP: 248)")
    max_objects: int = Field(default=30, ge=1)
    model: UnetModelConfig = UnetModelConfig()
    train: UnetTrainConfig = UnetTrainConfig()
    preview: SamplerConfig = SamplerConfig(steps=25)
    preview_samples: int = Field(default=4, ge=1)
    output: str = "models/unet"
    checkpoints: str = "checkpoints/unet"
    metrics: str = Field(default="metrics/unet.json", description="headline numbers (dvc metrics)")
    report: str = Field(default="reports/unet/run.json", description="run report: speed, processes, resume")
    plots: str = "metrics/unet_loss.csv"
    grid: str = "reports/unet/preview.png"


class PlanConfig(Section):
    """The generation plan: which layouts and captions to draw, written before anything is generated."""

    source: str = Field(default="data/captioned", description="real shards whose layouts are reused")
    split: str = "train"
    layouts: str | None = Field(default=None, description="user layouts instead: COCO JSON or JSONL")
    num_samples: int = Field(default=64, ge=1)
    rows_per_shard: int = Field(default=16, ge=1)
    seed: int = 0
    class_targets: dict[str, float] = Field(
        default_factory=dict, description="class -> multiple of its real frequency (bicycle: 2.0)"
    )
    flip: float = Field(default=0.5, ge=0, le=1)
    jitter: float = Field(default=0.05, ge=0, le=0.5, description="box shift/scale as a fraction of its size")
    box_dropout: float = Field(default=0.1, ge=0, le=1)
    max_paste_overlap: float = Field(default=0.2, ge=0, le=1, description="IoU limit for pasted boxes")
    max_objects: int = Field(default=30, ge=1)
    output: str = "data/plan.parquet"
    report: str = "reports/plan.json"


class GenerateConfig(Section):
    plan: str = "data/plan.parquet"
    unet: str = "models/unet"
    sampler: SamplerConfig = SamplerConfig(steps=25, guidance=3.0)
    batch_size: int = Field(default=8, ge=1)
    device: str = "auto"
    split: str = "train"
    output: str = "data/synthetic"
    report: str = "reports/generate.json"


class FeatureConfig(Section):
    """The image features behind FID / KID / precision-recall (diffx/eval/features.py)."""

    extractor: Literal["random-conv", "inception"] = Field(
        default="random-conv",
        description="random-conv: a seeded, untrained conv net (offline; Naeem et al. 2020); inception: the FID "
        "InceptionV3 from a local weights file (needs torch-fidelity, the 'inception' extra)",
    )
    inception_weights: str | None = Field(default=None, description="local pt_inception-2015-12-05 weights file")
    dims: int = Field(default=256, ge=8, description="random-conv feature width")
    seed: int = 0
    batch_size: int = Field(default=32, ge=1)


class DetectorModelConfig(Section):
    """The compact CenterNet-style detector of diffx/eval/detector.py (no torchvision)."""

    inputs: list[str] | None = Field(default=None, description="modalities stacked as input; None = all")
    width: int = Field(default=16, ge=8, description="channels of the first stage (x1, x2, x4, x4 deeper)")
    stride: Literal[4] = 4
    max_detections: int = Field(default=100, ge=1)
    score_threshold: float = Field(default=0.01, ge=0, lt=1)


class DetectorTrainConfig(TrainLoopConfig):
    hflip: bool = True
    size_weight: float = Field(default=0.1, ge=0, description="L1 weight of the box size head (CenterNet: 0.1)")


class EvaluateConfig(Section):
    """Stage evaluate: realism, cross-modal alignment, layout fidelity and the downstream detector gain."""

    real: str = "data/canonical"
    reference_split: str = Field(default="train", description="real split the generated set is compared with")
    test_split: str = Field(default="test", description="real split the detectors are scored on")
    synthetic: str = "data/synthetic"
    synthetic_split: str = "train"
    features: FeatureConfig = FeatureConfig()
    kid_subset_size: int = Field(default=50, ge=2)
    kid_subsets: int = Field(default=50, ge=1)
    nearest_k: int = Field(default=3, ge=1, description="k of the k-NN manifolds for precision / recall")
    align_max_shift: int = Field(default=4, ge=0, description="px searched when finding the best registration")
    control_shift: int = Field(
        default=6, ge=0, description="px the misaligned control set is shifted by (RGB one way, X the other); 0 = off"
    )
    detector: DetectorModelConfig = DetectorModelConfig()
    detector_train: DetectorTrainConfig = DetectorTrainConfig(
        steps=400, batch_size=16, lr=2e-3, warmup_steps=50, ema_decay=None, weight_decay=1e-4, log_every=20
    )
    grid_samples: int = Field(default=6, ge=0)
    device: str = "auto"
    output: str = Field(default="models/detector", description="the two detectors (real, real+synthetic)")
    checkpoints: str = "checkpoints/detector"
    metrics: str = Field(default="metrics/eval.json", description="headline numbers (dvc metrics)")
    report: str = Field(default="reports/eval.json", description="every measurement, per set and modality")
    plots: str = Field(default="metrics/eval", description="folder of CSVs for dvc plots (PR curves, losses)")
    grid: str = "reports/eval/samples.png"


class ImageGateConfig(Section):
    """Thresholds on per-sample image and box statistics (pixel values scaled to [0, 1])."""

    min_std: float = Field(default=0.005, ge=0, description="below this a modality is blank / constant")
    min_nonzero_fraction: float = Field(default=0.01, ge=0, le=1, description="e.g. a depth map of zeros")
    max_hist_distance: float = Field(
        default=0.25, ge=0, le=1, description="W1 distance of a grey modality's histogram to the reference"
    )
    min_size: int = Field(default=16, ge=1)
    max_objects: int = Field(default=30, ge=0, description="layout slots of the UNet (GLIGEN: 30)")
    min_box_area: float = Field(default=4.0, ge=0, description="px^2; smaller boxes are label noise")
    max_box_aspect: float = Field(default=20.0, ge=1)
    min_rows: int = Field(default=1, ge=0)


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


class CaptionGateConfig(Section):
    min_tokens: int = Field(default=3, ge=1)
    max_tokens: int = Field(default=248, ge=1, description="the text encoder's context (Long-CLIP: 248)")
    tokenizer: str = Field(default="minilm", description="'minilm' (bundled) or a tokenizer folder / hub id")
    sources: list[str] = Field(default_factory=lambda: ["template", "human", "lmm:*"])


class VaeGateConfig(Section):
    min_psnr: dict[str, float] = Field(default_factory=dict, description="modality -> PSNR floor (dB)")
    default_min_psnr: float = 15.0
    min_ssim: float = Field(default=0.3, ge=-1, le=1)


class QualityConfig(Section):
    reports: str = Field(default="reports/quality", description="full gate reports (outcomes, reference stats)")
    metrics: str = Field(default="metrics/quality", description="each gate's verdict and counts (dvc metrics)")
    docs: str | None = Field(default="reports/quality/docs", description="great_expectations data docs (HTML)")
    max_failed_rows_shown: int = Field(default=20, ge=1)
    workers: int = Field(default=0, ge=0, description="decode threads; 0 = one per CPU")
    ingest: ImageGateConfig = ImageGateConfig()
    captions: CaptionGateConfig = CaptionGateConfig()
    vae: VaeGateConfig = VaeGateConfig()
    generated: GeneratedGateConfig = GeneratedGateConfig()


class DiffxConfig(Section):
    data: DataConfig
    shards: ShardsConfig = ShardsConfig()
    ingest: IngestConfig
    demo: DemoConfig = DemoConfig()
    caption: CaptionConfig = CaptionConfig()
    refine: RefineConfig = RefineConfig()
    vae: VaeConfig = VaeConfig()
    unet: UnetConfig = UnetConfig()
    plan: PlanConfig = PlanConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    quality: QualityConfig = QualityConfig()

    def params_hash(self, *sections: str) -> str:
        """A short digest of the named sections (all when none): provenance for everything we write.

        Keys named in OUTPUT_KEYS are left out: where a result is written never changes what it is.
        """
        dumped = self.model_dump(mode="json")
        chosen = {k: dumped[k] for k in sections} if sections else dumped
        chosen = {
            k: {kk: vv for kk, vv in v.items() if kk not in OUTPUT_KEYS} if isinstance(v, dict) else v
            for k, v in chosen.items()
        }
        text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"  {loc}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "<params>") -> DiffxConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = DiffxConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None
    return config


def load_config(path: str | Path = "params.yaml") -> DiffxConfig:
    """Read and validate params.yaml; errors name the file and the dotted key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw, str(path))

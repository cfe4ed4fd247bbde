"""The evaluate stage: realism features, the downstream detector and layout nets, and the training recipes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from diffx.config.training import TrainLoopConfig
from diffx.config.vae import LpipsConfig
from diffx.section import Section


class FeatureConfig(Section):
    """The image features behind FID / KID / precision-recall (diffx/metrics/features.py)."""

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
    size_edges_px: tuple[float, float] = Field(
        default=(16.0, 32.0),
        description="object size classes for AP@0.5 by size: small below the first side (sqrt of box area, px), "
        "large from the second; in pixels, so runs with other latent factors compare: the defaults are 2 and 4 cells "
        "of an /8 latent (SD's), 4 and 8 of the demo's /4",
    )
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
        if not 0 < self.size_edges_px[0] < self.size_edges_px[1]:
            raise ValueError(f"evaluate.size_edges_px: {list(self.size_edges_px)} must be two increasing sides > 0")
        return self


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

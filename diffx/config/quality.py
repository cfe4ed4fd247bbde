"""The quality gates after each stage: the thresholds each great_expectations suite applies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diffx.section import Section


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

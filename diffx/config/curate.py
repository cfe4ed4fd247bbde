"""The curate stage: which generated samples to keep and how to label them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from diffx.section import Section


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
        default="verified",
        description="plan: the boxes the sample was generated from, unchanged; verified: the planned boxes the "
        "real-data detector found (same class, IoU >= curate.iou), plus its finds of at least adopt_score where "
        "no planned box lies; detector: the detector's finds of at least curate.score_threshold (pseudo-labels). "
        "Verified is the default: it beat detector on each of five paired detector seeds (docs/stages/curate.md)",
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

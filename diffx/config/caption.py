"""The caption and refine stages: captioning backends and the refinement rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from diffx.section import Section


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

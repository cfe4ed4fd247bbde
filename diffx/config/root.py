"""The whole configuration: one typed section per stage, each nested section named by its dotted path."""

from __future__ import annotations

from pydantic import Field, model_validator

from diffx.config.caption import CaptionConfig, RefineConfig
from diffx.config.conditioning import ConditioningConfig
from diffx.config.curate import CurateConfig
from diffx.config.data import DataConfig, DemoConfig, IngestConfig, ShardsConfig
from diffx.config.evaluate import EvaluateConfig
from diffx.config.quality import QualityConfig
from diffx.config.sample import GenerateConfig, PlanConfig
from diffx.config.unet import UnetConfig
from diffx.config.vae import VaeConfig
from diffx.section import Section


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

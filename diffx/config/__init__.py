"""Typed configuration: the one home of every setting's default, and the one way settings enter a run.

Every section forbids unknown keys: a typo in params.yaml must fail loudly with the key's dotted path,
not be silently ignored while the run uses a default. The sections live one module per stage
(:mod:`diffx.config.vae`, :mod:`diffx.config.unet`, ...), the whole tree in :mod:`diffx.config.root`;
params.yaml is rendered from them (:func:`render_params`), overlays and dotted overrides go through
:func:`load_config` / :func:`with_overrides`, which validate again, and each stage reads only its own sections.
"""

from __future__ import annotations

from diffx.config.caption import CaptionConfig, LmmConfig, RefineConfig, TemplateCaptionConfig
from diffx.config.conditioning import ConditioningConfig
from diffx.config.curate import CurateConfig, CurateLabelsConfig, CurateRulesConfig
from diffx.config.data import DEMO_MODALITIES, DataConfig, DemoConfig, IngestConfig, ShardsConfig, Source
from diffx.config.evaluate import (
    DetectorModelConfig,
    DetectorTrainConfig,
    EvaluateConfig,
    FeatureConfig,
    LayoutNetConfig,
    LayoutNetTrainConfig,
    RecipeConfig,
)
from diffx.config.keys import OUTPUT_KEYS, SPEED_KEYS, section_hash
from diffx.config.loading import (
    dotted_overrides,
    key_lines,
    load_config,
    merge,
    parse_config,
    read_params,
    with_overrides,
)
from diffx.config.quality import CaptionGateConfig, GeneratedGateConfig, ImageGateConfig, QualityConfig, VaeGateConfig
from diffx.config.render import RENDER_HEADER, render_params
from diffx.config.root import DiffxConfig
from diffx.config.sample import GenerateConfig, PlanConfig
from diffx.config.training import TrainLoopConfig
from diffx.config.unet import SamplerConfig, UnetConfig, UnetModelConfig, UnetTrainConfig
from diffx.config.vae import LpipsConfig, VaeConfig, VaeModelConfig, VaeTrainConfig
from diffx.data.readers.coco_folders import CocoFoldersSource
from diffx.data.readers.come15k import Come15kSource
from diffx.data.readers.diffx_folder import DiffxFolderSource
from diffx.data.readers.flir import FlirSource
from diffx.data.readers.kaist import KaistSource
from diffx.data.readers.mfnet import MfnetSource
from diffx.data.readers.sunrgbd import SunRgbdSource
from diffx.data.readers.voc_pairs import VocPairsSource

__all__ = [  # the readers' option sections too: each is a valid ingest.source
    "DEMO_MODALITIES",
    "OUTPUT_KEYS",
    "RENDER_HEADER",
    "SPEED_KEYS",
    "CaptionConfig",
    "CaptionGateConfig",
    "CocoFoldersSource",
    "Come15kSource",
    "ConditioningConfig",
    "CurateConfig",
    "CurateLabelsConfig",
    "CurateRulesConfig",
    "DataConfig",
    "DemoConfig",
    "DetectorModelConfig",
    "DetectorTrainConfig",
    "DiffxConfig",
    "DiffxFolderSource",
    "EvaluateConfig",
    "FeatureConfig",
    "FlirSource",
    "GenerateConfig",
    "GeneratedGateConfig",
    "ImageGateConfig",
    "IngestConfig",
    "KaistSource",
    "LayoutNetConfig",
    "LayoutNetTrainConfig",
    "LmmConfig",
    "LpipsConfig",
    "MfnetSource",
    "PlanConfig",
    "QualityConfig",
    "RecipeConfig",
    "RefineConfig",
    "SamplerConfig",
    "ShardsConfig",
    "Source",
    "SunRgbdSource",
    "TemplateCaptionConfig",
    "TrainLoopConfig",
    "UnetConfig",
    "UnetModelConfig",
    "UnetTrainConfig",
    "VaeConfig",
    "VaeGateConfig",
    "VaeModelConfig",
    "VaeTrainConfig",
    "VocPairsSource",
    "dotted_overrides",
    "key_lines",
    "load_config",
    "merge",
    "parse_config",
    "read_params",
    "render_params",
    "section_hash",
    "with_overrides",
]

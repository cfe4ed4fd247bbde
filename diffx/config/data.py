"""The dataset description, the shard layout, ingest and the demo world's settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from diffx.data.readers.coco_folders import CocoFoldersSource
from diffx.data.readers.come15k import Come15kSource
from diffx.data.readers.diffx_folder import DiffxFolderSource
from diffx.data.readers.flir import FlirSource
from diffx.data.readers.kaist import KaistSource
from diffx.data.readers.mfnet import MfnetSource
from diffx.data.readers.sunrgbd import SunRgbdSource
from diffx.data.readers.voc_pairs import VocPairsSource
from diffx.data.spec import DatasetSpec, FrameSpec, LayoutKind, ModalitySpec
from diffx.section import Section

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
    object_distance_m: tuple[float, float] = Field(
        default=(5.0, 10.0),
        description="nearest and farthest an object stands from the camera (metres): the world's object scale; at "
        "160 x 128 a person 10 m away is 21 px tall (5 cells of the default /4 latent, 2.6 of an /8 one), a car 5 m "
        "away 124 px long (docs/demo-results.md)",
    )
    splits: dict[str, int] = Field(
        default_factory=lambda: {"train": 64, "val": 16, "test": 208},
        description="frames per split; a test frame costs only detector inference, and a detector gain of a few "
        "points needs a couple of hundred test scenes to stand out from which scenes were drawn",
    )

    @model_validator(mode="after")
    def _distances_ordered(self) -> DemoConfig:
        near, far = self.object_distance_m
        if not 0 < near <= far:
            raise ValueError(f"object_distance_m {[near, far]}: expected [near, far] metres with 0 < near <= far")
        return self

"""What a dataset *is*: its modalities, its class list, its dense layout and the frame a model sees.

Kept separate from the samples so the Parquet schema, the validators and the readers all agree on one
description instead of each guessing from the data.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODALITY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_COLUMNS = frozenset(
    {
        "id",
        "split",
        "width",
        "height",
        "objects",
        "layout",
        "caption",
        "caption_source",
        "seed",
        "source_id",
        "model_id",
        "sampler",
        "steps",
        "guidance",
    }
)


class ModalitySpec(BaseModel):
    """One imaging modality: how many channels, how many bits, and what a pixel value means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    channels: Literal[1, 3]
    bit_depth: Literal[8, 16] = 8
    units: str = "intensity"
    scale: float | None = Field(
        default=None, description="physical units per pixel value (e.g. metres per unit for depth)"
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_column(cls, value: str) -> str:
        if not MODALITY_NAME.match(value):
            raise ValueError(f"modality name {value!r} must match {MODALITY_NAME.pattern}")
        if value in RESERVED_COLUMNS:
            raise ValueError(f"modality name {value!r} clashes with a reserved column")
        return value

    @model_validator(mode="after")
    def _rgb_is_8bit(self) -> ModalitySpec:
        if self.channels == 3 and self.bit_depth != 8:
            raise ValueError(f"modality {self.name!r}: 3-channel images must be 8-bit")
        return self

    @property
    def pil_mode(self) -> str:
        """The PIL mode a PNG of this modality decodes to."""
        if self.channels == 3:
            return "RGB"
        return "L" if self.bit_depth == 8 else "I;16"

    @property
    def max_value(self) -> int:
        return (1 << self.bit_depth) - 1


LayoutKind = Literal["segmentation", "saliency", "edges", "face"]


class FrameSpec(BaseModel):
    """The frame a model sees, whatever size the stored frames are.

    Stored frames keep their native size (no lossy step at ingest); every reader of pixels for a model
    (training, validation, the planner) resizes so the short side is ``resolution`` and crops, moving
    images, boxes and dense layouts together (diffx/data/frame.py). Training crops at random (offsets on
    the VAE's 8-px grid, so cached latents crop exactly), everything else at the centre.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int | None = Field(
        default=None,
        ge=16,
        description="short side in px after resizing (multiple of 8; paper: 512); null = frames as stored",
    )
    crop: Literal["square", "none"] = Field(
        default="square",
        description="square: resolution x resolution crops (mixed aspect ratios batch together); "
        "none: keep the aspect, long side cut to a multiple of 8",
    )
    min_box_visible: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="a box cut by the crop is clipped to it, and dropped when less than this share of its area "
        "stays inside",
    )

    @field_validator("resolution")
    @classmethod
    def _on_the_latent_grid(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"resolution {value} must be a multiple of 8 (the VAE downsamples by 8)")
        return value


class DatasetSpec(BaseModel):
    """Modalities (ordered) + classes (ordered; a class's id is its index) + optional dense layout + frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: tuple[ModalitySpec, ...] = Field(min_length=1)
    classes: tuple[str, ...] = Field(min_length=1)
    layout_kind: LayoutKind | None = None
    layout_classes: tuple[str, ...] = Field(
        default=(), description="segmentation only: the name of each label value 0, 1, ... of the layout map"
    )
    frame: FrameSpec = Field(default_factory=FrameSpec)

    @model_validator(mode="after")
    def _unique(self) -> DatasetSpec:
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {list(self.classes)}")
        if self.layout_kind == "segmentation":
            if len(self.layout_classes) < 2:
                raise ValueError(
                    "layout_kind segmentation needs layout_classes: the name of every label value (0 first, "
                    "e.g. [unlabeled, car, person, ...]), at least 2"
                )
            if len(set(self.layout_classes)) != len(self.layout_classes):
                raise ValueError(f"layout_classes must be unique, got {list(self.layout_classes)}")
            if len(self.layout_classes) > 256:
                raise ValueError("layout_classes: at most 256 (the layout map is an 8-bit PNG)")
        elif self.layout_classes:
            raise ValueError(f"layout_classes name segmentation labels; layout_kind is {self.layout_kind!r}")
        return self

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def modality(self, name: str) -> ModalitySpec:
        for spec in self.modalities:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown modality {name!r}; this dataset has {list(self.modality_names)}")

    def class_id(self, name: str) -> int:
        return self.classes.index(name)


def require_compatible(found: DatasetSpec, needed: DatasetSpec, *, found_in: str, needed_by: str) -> None:
    """The one rule for "may data described by ``found`` be used where ``needed`` is expected".

    The same classes in the same order (a class id is its index, in boxes, plans and models), and every
    needed modality with the same channels and bit depth (extra modalities are allowed: they are not read).
    Raised as a DataError naming where ``found`` came from and who needs it.
    """
    from diffx.errors import DataError

    problems = []
    if tuple(found.classes) != tuple(needed.classes):
        problems.append(f"classes {list(found.classes)}, {needed_by} needs {list(needed.classes)} in that order")
    have = {m.name: (m.channels, m.bit_depth) for m in found.modalities}
    for m in needed.modalities:
        if m.name not in have:
            problems.append(f"no modality {m.name!r} (has {sorted(have)})")
        elif have[m.name] != (m.channels, m.bit_depth):
            problems.append(
                f"modality {m.name!r} is {have[m.name][0]}-channel {have[m.name][1]}-bit, "
                f"{needed_by} needs {m.channels}-channel {m.bit_depth}-bit"
            )
    if found.layout_kind != needed.layout_kind:
        problems.append(f"layout kind {found.layout_kind!r}, {needed_by} needs {needed.layout_kind!r}")
    elif tuple(found.layout_classes) != tuple(needed.layout_classes):
        problems.append(f"layout classes {list(found.layout_classes)}, {needed_by} needs {list(needed.layout_classes)}")
    if found.frame.resolution != needed.frame.resolution or found.frame.crop != needed.frame.crop:
        problems.append(
            f"frames at resolution {found.frame.resolution} (crop {found.frame.crop}), {needed_by} needs "
            f"{needed.frame.resolution} (crop {needed.frame.crop})"
        )
    if problems:
        raise DataError(found_in, "; ".join(problems), field="dataset")

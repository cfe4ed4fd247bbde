"""What a dataset *is*: its modalities and its class list.

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


class DatasetSpec(BaseModel):
    """Modalities (ordered) + classes (ordered; a class's id is its index) + optional dense layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: tuple[ModalitySpec, ...] = Field(min_length=1)
    classes: tuple[str, ...] = Field(min_length=1)
    layout_kind: Literal["segmentation", "saliency", "edges", "face"] | None = None

    @model_validator(mode="after")
    def _unique(self) -> DatasetSpec:
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {list(self.classes)}")
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
    if problems:
        raise DataError(found_in, "; ".join(problems), field="dataset")

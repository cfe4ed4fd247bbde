"""The canonical sample (DESIGN.md section 3) and the one validator every stage uses."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from diffx.data.images import EncodedImage
from diffx.data.layouts import is_label_map, layout_problem
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError


@dataclass(frozen=True)
class BoxObject:
    """An object box in pixels of the sample's frame: (x_min, y_min, x_max, y_max)."""

    bbox: tuple[float, float, float, float]
    category: str
    category_id: int
    # What the source says about the object, kept so detector teams can filter; None = the source does not say.
    iscrowd: bool | None = None  # COCO: the box covers a crowd (COCO mAP ignores detections on it)
    difficult: bool | None = None  # VOC: hard to recognise (VOC mAP ignores it)
    truncated: bool | None = None  # VOC: the object continues outside the frame
    occlusion: int | None = None  # KAIST bbGt: 0 none, 1 partial, 2 heavy

    def attributes(self) -> dict[str, bool | int | None]:
        return {name: getattr(self, name) for name in OBJECT_ATTRIBUTES}


OBJECT_ATTRIBUTES = ("iscrowd", "difficult", "truncated", "occlusion")


@dataclass
class Sample:
    """One aligned multi-modal sample: every modality shares the frame and the boxes."""

    id: str
    split: str
    width: int
    height: int
    images: dict[str, EncodedImage]
    objects: list[BoxObject] = field(default_factory=list)
    layout: EncodedImage | None = None
    caption: str | None = None
    caption_source: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # generated rows: seed, source_id, ...
    annotation: str | None = None  # ingest only: the file the boxes came from, for error messages

    def source_files(self) -> tuple[str, ...]:
        """The files this sample was read from (annotation first), named in every complaint about it."""
        files = [self.annotation] if self.annotation else []
        files += [image.path for image in self.images.values() if image.path]
        if self.layout is not None and self.layout.path:
            files.append(self.layout.path)
        return tuple(dict.fromkeys(files))


@dataclass(frozen=True)
class Rejected:
    """A sample a reader or validator refused, kept for the stage report (never silently dropped)."""

    id: str
    split: str
    reason: str
    files: tuple[str, ...] = ()  # the source files involved, so the quarantine list says where to look


def make_object(bbox: Iterable[float], category: str, spec: DatasetSpec) -> BoxObject:
    values = tuple(float(v) for v in bbox)
    if len(values) != 4:
        raise ValueError(f"bbox must have 4 numbers, got {len(values)}")
    category_id = spec.class_id(category) if category in spec.classes else -1
    return BoxObject(values, category, category_id)  # type: ignore[arg-type]


def sample_problems(sample: Sample, spec: DatasetSpec) -> list[str]:
    """Every way ``sample`` breaks the canonical contract; empty when it is valid."""
    problems: list[str] = []
    if not sample.id or not isinstance(sample.id, str):
        problems.append("id: must be a non-empty string")
    if sample.width <= 0 or sample.height <= 0:
        problems.append(f"width/height: must be positive, got {sample.width}x{sample.height}")
    missing = [m for m in spec.modality_names if m not in sample.images]
    extra = [m for m in sample.images if m not in spec.modality_names]
    if missing:
        problems.append(f"modalities: missing {missing}")
    if extra:
        problems.append(f"modalities: unexpected {extra}; the dataset has {list(spec.modality_names)}")
    for name in spec.modality_names:
        image = sample.images.get(name)
        if image is None:
            continue
        if image.size != (sample.width, sample.height):
            problems.append(
                f"{name}: size {image.width}x{image.height} differs from the sample's "
                f"{sample.width}x{sample.height} (modalities must be aligned)"
            )
        want = spec.modality(name).pil_mode
        if image.mode != want:
            problems.append(f"{name}: PNG mode {image.mode!r}, expected {want!r}")
    if sample.layout is not None and sample.layout.size != (sample.width, sample.height):
        problems.append(f"layout: size {sample.layout.width}x{sample.layout.height} differs from the sample")
    if spec.layout_kind is not None and sample.layout is None:
        problems.append(f"layout: missing; the dataset's layout_kind is {spec.layout_kind!r} (one map per sample)")
    elif spec.layout_kind is None and sample.layout is not None:
        problems.append("layout: the sample has a layout map but the dataset's layout_kind is null")
    elif sample.layout is not None:
        if sample.layout.mode != "L":
            problems.append(f"layout: PNG mode {sample.layout.mode!r}, expected 'L' (8-bit grey)")
        elif is_label_map(spec):
            try:
                problem = layout_problem(sample.layout.to_array(), spec)
            except DataError as err:
                problem = str(err)
            if problem:
                problems.append(f"layout: {problem}")
    for index, obj in enumerate(sample.objects):
        where = f"objects[{index}]"
        x0, y0, x1, y1 = obj.bbox
        if not all(math.isfinite(v) for v in obj.bbox):
            problems.append(f"{where}.bbox: not finite {list(obj.bbox)}")
            continue
        if x0 >= x1 or y0 >= y1:
            problems.append(f"{where}.bbox: needs x_min < x_max and y_min < y_max, got {list(obj.bbox)}")
        if x0 < 0 or y0 < 0 or x1 > sample.width or y1 > sample.height:
            problems.append(f"{where}.bbox: {list(obj.bbox)} outside the {sample.width}x{sample.height} image")
        if obj.category not in spec.classes:
            problems.append(f"{where}.category: {obj.category!r} is not in the class list {list(spec.classes)}")
        elif obj.category_id != spec.class_id(obj.category):
            problems.append(
                f"{where}.category_id: {obj.category_id} but {obj.category!r} has id {spec.class_id(obj.category)}"
            )
    if sample.caption is not None and sample.caption_source is None:
        problems.append("caption_source: required when a caption is present")
    return problems


def validate_sample(sample: Sample, spec: DatasetSpec, source: str | None = None) -> Sample:
    """Raise a DataError naming the sample and every problem; return the sample when it is valid."""
    problems = sample_problems(sample, spec)
    if problems:
        raise DataError(source or f"sample {sample.id!r} ({sample.split})", "; ".join(problems))
    return sample


class UniqueIds:
    """Tracks ids across a stream (and across shards) and reports the first place each was seen."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def check(self, sample_id: str, where: str) -> str | None:
        first = self._seen.get(sample_id)
        if first is not None:
            return f"duplicate id {sample_id!r}: first seen in {first}, again in {where}"
        self._seen[sample_id] = where
        return None


def validated(items: Iterable[Sample | Rejected], spec: DatasetSpec, rejected: list[Rejected]) -> Iterator[Sample]:
    """Pass valid samples through; append every invalid or duplicate one to ``rejected``."""
    ids = UniqueIds()
    for item in items:
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        problems = sample_problems(item, spec)
        duplicate = ids.check(item.id, f"split {item.split!r}")
        if duplicate:
            problems.append(duplicate)
        if problems:
            files = item.source_files()
            objects = any(p.startswith("objects[") for p in problems)
            where = f"{item.annotation}: " if objects and item.annotation else ""
            rejected.append(Rejected(item.id, item.split, where + "; ".join(problems), files))
            continue
        yield item

"""Pieces every source reader shares: annotation parsers, category mapping, per-sample error capture.

Readers yield :class:`Pending` samples (or :class:`Rejected`): listing the source and parsing its annotation
files happens in the reader, while decoding and encoding a sample's images waits in ``Pending.build`` so that
ingest can run those builds in worker processes (:mod:`diffx.data.parallel`). A problem confined to one sample
(a corrupt image, a missing modality file, a bad box line) rejects that sample with the reason; a problem
with the whole source (a missing annotation file, an empty split list) raises, because nothing sensible can
follow.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffx.data.images import (
    EncodedImage,
    decode_array,
    encode_png,
    load_modality_file,
    read_file_bytes,
    to_modality,
)
from diffx.data.layouts import layout_problem
from diffx.data.readers.options import ChannelRule, apply_channel_rule
from diffx.data.sample import BoxObject, Rejected, Sample
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError

Box = tuple[float, float, float, float]
# A box as a source states it: (class name, xyxy), with what the source says of the object when it says anything
# (iscrowd, difficult, truncated, occlusion: the BoxObject attributes).
SourceBox = tuple[str, Box] | tuple[str, Box, dict[str, bool | int]]


@dataclass(frozen=True)
class ReadContext:
    """What every reader needs besides its own options."""

    spec: DatasetSpec
    compress_level: int = 6
    channels: dict[str, ChannelRule] = field(default_factory=dict)

    def channel_rule(self, modality: str) -> ChannelRule:
        return self.channels.get(modality, "strict")


@dataclass(frozen=True)
class Pending:
    """A sample the reader has found but not yet decoded: ``build`` reads and encodes its files."""

    id: str
    split: str
    build: Callable[[], Sample]

    def resolve(self) -> Sample | Rejected:
        """Run ``build``; a DataError rejects just this sample, naming the file it came from."""
        try:
            return self.build()
        except DataError as err:
            return Rejected(self.id, self.split, str(err), (err.source,))


def guarded(sample_id: str, split: str, build: Callable[[], Sample]) -> Pending:
    """The sample ``build`` makes, run later (and maybe elsewhere) with its errors confined to it."""
    return Pending(sample_id, split, build)


class CategoryMapper:
    """Source class names -> our class names; unknown names are errors, ignored ones are counted."""

    def __init__(self, spec: DatasetSpec, category_map: dict[str, str], ignore: list[str]):
        self.spec = spec
        self.category_map = category_map
        self.ignore = set(ignore)
        self.ignored: dict[str, int] = {}

    def __call__(self, name: str, source: str, field: str | None = None) -> str | None:
        if name in self.ignore:
            self.ignored[name] = self.ignored.get(name, 0) + 1
            return None
        mapped = self.category_map.get(name, name)
        if mapped not in self.spec.classes:
            raise DataError(
                source,
                f"unknown class {name!r}; expected one of {list(self.spec.classes)} "
                "(map it with category_map or list it in ignore_categories)",
                field=field,
            )
        return mapped

    def objects(self, boxes: list[SourceBox], source: str) -> list[BoxObject]:
        """(name, xyxy) or (name, xyxy, attributes) per box -> our objects; ignored classes are counted."""
        out = []
        for index, (name, box, *attributes) in enumerate(boxes):
            mapped = self(name, source, field=f"object {index}")
            if mapped is not None:
                xyxy = tuple(float(v) for v in box)
                extra = attributes[0] if attributes else {}
                out.append(BoxObject(xyxy, mapped, self.spec.class_id(mapped), **extra))  # type: ignore[arg-type]
        return out


def assemble(
    sample_id: str,
    split: str,
    images: dict[str, EncodedImage],
    objects: list[BoxObject],
    *,
    layout: EncodedImage | None = None,
    caption: str | None = None,
    caption_source: str | None = None,
    annotation: str | None = None,
) -> Sample:
    """``annotation`` is the file the boxes came from, named by any later complaint about them."""
    first = next(iter(images.values()))
    return Sample(
        sample_id,
        split,
        first.width,
        first.height,
        images,
        objects,
        layout,
        caption,
        caption_source if caption is not None else None,
        annotation=annotation,
    )


def load_modality(path: str, name: str, ctx: ReadContext) -> EncodedImage:
    """One modality file; a channel rule other than strict reduces a multi-channel file first."""
    rule = ctx.channel_rule(name)
    if rule == "strict":
        return load_modality_file(path, ctx.spec.modality(name), ctx.compress_level)
    return encode_modality(decode_array(read_file_bytes(path), path), name, path, ctx)


def load_modalities(paths: dict[str, str], ctx: ReadContext) -> dict[str, EncodedImage]:
    return {name: load_modality(path, name, ctx) for name, path in paths.items()}


def load_layout(path: str, ctx: ReadContext) -> EncodedImage:
    """A dense layout map file: 8-bit grey (or grey stored as RGB), checked against the dataset's layout kind."""
    if ctx.spec.layout_kind is None:
        raise DataError(path, "a layout folder is configured but data.layout_kind is null; set the kind it holds")
    array = decode_array(read_file_bytes(path), path)
    if array.ndim == 3 and array.shape[2] in (3, 4) and (array[..., :3] == array[..., :1]).all():
        array = np.ascontiguousarray(array[..., 0])
    problem = layout_problem(array, ctx.spec)
    if problem:
        raise DataError(path, f"layout ({ctx.spec.layout_kind}): {problem}")
    return encode_png(array, path, ctx.compress_level)


def encode_modality(array: np.ndarray, name: str, source: str, ctx: ReadContext) -> EncodedImage:
    """An array a reader decoded itself (MFNet planes, FLIR crops) -> canonical PNG, channel rule applied."""
    array = apply_channel_rule(array, ctx.channel_rule(name), name, source)
    return encode_png(to_modality(array, ctx.spec.modality(name), source), source, ctx.compress_level)


def require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DataError(path, f"{what} folder not found")


def read_id_list(path: str) -> list[str]:
    """A split file: one id per line; blank lines skipped; an empty file is an error."""
    if not os.path.isfile(path):
        raise DataError(path, "split file not found")
    with open(path, encoding="utf-8") as handle:
        ids = [line.strip() for line in handle if line.strip()]
    if not ids:
        raise DataError(path, "split file is empty; expected one sample id per line")
    return ids


# ------------------------------------------------------------------------------------- COCO JSON
@dataclass
class CocoIndex:
    images: list[dict[str, Any]]
    boxes: dict[Any, list[SourceBox]]  # image id -> (category name, xyxy, attributes)


def load_coco(path: str, file_key: str = "file_name") -> CocoIndex:
    """``file_key`` names the image entry's file-name key (COCO: file_name; INSANet's KAIST JSON: im_name)."""
    if not os.path.isfile(path):
        raise DataError(path, "COCO annotation file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err.msg}", line=err.lineno) from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {err.start})") from None
    if not isinstance(data, dict):
        raise DataError(
            path, f"expected a COCO object with images/annotations/categories, got a JSON {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(path, f"expected a list under {key!r}", field=key)
    names = {}
    for index, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(path, "category needs 'id' and 'name'", field=f"categories[{index}]")
        names[cat["id"]] = cat["name"]
    for index, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get(file_key), str):
            keys = sorted(img) if isinstance(img, dict) else type(img).__name__
            raise DataError(
                path,
                f"image entry needs a {file_key!r} string (it has {keys}; set file_name_key to the key that "
                "holds the file name)",
                field=f"images[{index}]",
            )
    boxes: dict[Any, list[SourceBox]] = {img.get("id"): [] for img in data["images"]}
    for index, ann in enumerate(data["annotations"]):
        where = f"annotations[{index}]"
        if not isinstance(ann, dict):
            raise DataError(path, "expected an annotation object", field=where)
        if ann.get("image_id") not in boxes:
            raise DataError(path, f"image_id {ann.get('image_id')!r} is not in 'images'", field=where)
        if ann.get("category_id") not in names:
            raise DataError(path, f"category_id {ann.get('category_id')!r} is not in 'categories'", field=where)
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DataError(path, f"bbox must be [x, y, w, h], got {bbox!r}", field=where)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
            raise DataError(path, f"bbox must hold 4 finite numbers [x, y, w, h], got {bbox!r}", field=where)
        x, y, w, h = (float(v) for v in bbox)
        said = {"iscrowd": bool(ann["iscrowd"])} if isinstance(ann.get("iscrowd"), int | bool) else {}
        boxes[ann["image_id"]].append((names[ann["category_id"]], (x, y, x + w, y + h), said))
    return CocoIndex(data["images"], boxes)


# -------------------------------------------------------------------------------------- VOC XML
def parse_voc(path: str, one_based: bool = True) -> tuple[tuple[int, int] | None, list[SourceBox]]:
    """(width, height) from <size> when present, and (name, xyxy) per <object>."""
    if not os.path.isfile(path):
        raise DataError(path, "VOC annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(path, f"not valid XML: {err}", line=err.position[0]) from None
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            size = (int(size_el.findtext("width", "")), int(size_el.findtext("height", "")))
        except ValueError:
            raise DataError(path, "size/width and size/height must be integers", field="size") from None
    shift = 1.0 if one_based else 0.0
    objects: list[SourceBox] = []
    for index, obj in enumerate(root.findall("object")):
        where = f"object[{index}]"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(path, "object without <name>", field=where)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(path, "object without <bndbox>", field=where)
        try:
            x0, y0, x1, y1 = (float(bnd.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DataError(path, "bndbox needs numeric xmin, ymin, xmax, ymax", field=where) from None
        said = {k: _voc_flag(obj, k, path, where) for k in ("difficult", "truncated") if obj.find(k) is not None}
        objects.append((name, (x0 - shift, y0 - shift, x1, y1), said))
    return size, objects


def _voc_flag(obj: ET.Element, tag: str, path: str, where: str) -> bool:
    text = (obj.findtext(tag) or "").strip()
    if text not in ("0", "1"):
        raise DataError(path, f"<{tag}> must be 0 or 1, got {text!r}", field=where)
    return text == "1"


# ------------------------------------------------------------------------------------- YOLO txt
def parse_yolo(path: str, width: int, height: int, class_names: list[str]) -> list[tuple[str, Box]]:
    """Lines 'class cx cy w h' normalised to [0, 1]; errors name the line."""
    if not os.path.isfile(path):
        raise DataError(path, "YOLO label file not found")
    objects: list[tuple[str, Box]] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise DataError(path, f"expected 'class cx cy w h' (5 fields), got {len(parts)}", line=lineno)
            try:
                class_id = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:])
            except ValueError:
                raise DataError(path, "class must be an integer and cx cy w h numbers", line=lineno) from None
            if not 0 <= class_id < len(class_names):
                raise DataError(path, f"class id {class_id} outside 0..{len(class_names) - 1}", line=lineno)
            if not all(math.isfinite(v) for v in (cx, cy, w, h)):
                raise DataError(path, "box values must be finite", line=lineno)
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            objects.append((class_names[class_id], box))
    return objects


# ------------------------------------------------------------------------- masks -> boxes
def boxes_from_label_map(
    labels: np.ndarray, class_names: list[str], box_classes: list[str], min_pixels: int
) -> list[tuple[str, Box]]:
    """One box per 8-connected component of each box class (semantic masks carry no instances)."""
    from scipy import ndimage

    objects: list[tuple[str, Box]] = []
    structure = np.ones((3, 3), dtype=bool)
    for name in box_classes:
        value = class_names.index(name)
        components, count = ndimage.label(labels == value, structure=structure)
        if count == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
        for comp, (rows, cols) in enumerate(ndimage.find_objects(components), start=1):
            if sizes[comp - 1] >= min_pixels:
                objects.append((name, (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))))
    return objects

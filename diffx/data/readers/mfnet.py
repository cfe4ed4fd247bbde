"""MFNet: one 4-channel PNG per id (RGB in channels 0-2, thermal in channel 3) + a 9-class label PNG.

Converting the PNG to RGB would silently drop the thermal plane, so the channels are split here,
explicitly, and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from diffx.data.images import decode_array, encode_png, read_file_bytes
from diffx.data.readers.base import (
    CategoryMapper,
    Pending,
    ReadContext,
    assemble,
    boxes_from_label_map,
    encode_modality,
    guarded,
    read_id_list,
    require_dir,
)
from diffx.data.readers.options import ReaderOptions
from diffx.data.sample import Rejected, Sample
from diffx.errors import DataError


class MfnetSource(ReaderOptions):
    """MFNet: 4-channel PNG (RGB + thermal in channel 3) and a 9-class label PNG per id."""

    format: Literal["mfnet"] = "mfnet"
    root: str
    splits: list[str] = Field(default_factory=lambda: ["train", "val", "test"])
    labels: bool = True
    box_classes: list[str] = Field(default_factory=lambda: ["car", "person", "bike"])
    min_component_pixels: int = 16
    category_map: dict[str, str] = Field(default_factory=lambda: {"bike": "bicycle"})
    ignore_categories: list[str] = Field(default_factory=list)


MFNET_CLASSES = ["unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump"]


def _split_ids(options: MfnetSource) -> list[tuple[str, str]]:
    if options.splits:
        return [
            (split, i) for split in options.splits for i in read_id_list(os.path.join(options.root, f"{split}.txt"))
        ]
    images = os.path.join(options.root, "images")
    require_dir(images, "images")
    return [("train", os.path.splitext(n)[0]) for n in sorted(os.listdir(images)) if n.endswith(".png")]


def read(options: MfnetSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    names = ctx.spec.modality_names
    for split, sample_id in _split_ids(options):

        def build(sample_id=sample_id, split=split) -> Sample:
            path = os.path.join(options.root, "images", f"{sample_id}.png")
            array = decode_array(read_file_bytes(path), path)
            if array.ndim != 3 or array.shape[2] != 4:
                got = 1 if array.ndim == 2 else array.shape[2]
                raise DataError(path, f"expected a 4-channel PNG (RGB + thermal), got {got} channel(s)")
            planes = {"rgb": array[..., :3], "thermal": array[..., 3]}
            unknown = [n for n in names if n not in planes]
            if unknown:
                raise DataError(path, f"MFNet holds only rgb and thermal; the config asks for {unknown}")
            images = {n: encode_modality(planes[n], n, path, ctx) for n in names}
            boxes: list = []
            layout = None
            if options.labels:
                label_path = os.path.join(options.root, "labels", f"{sample_id}.png")
                labels = decode_array(read_file_bytes(label_path), label_path)
                if labels.ndim != 2:
                    raise DataError(label_path, "expected a 1-channel label PNG of class ids 0..8")
                if labels.max() >= len(MFNET_CLASSES):
                    raise DataError(label_path, f"label value {int(labels.max())} outside 0..8")
                boxes = boxes_from_label_map(labels, MFNET_CLASSES, options.box_classes, options.min_component_pixels)
                if ctx.spec.layout_kind == "segmentation":
                    layout = encode_png(labels.astype("uint8"), label_path, ctx.compress_level)
            return assemble(
                sample_id, split, images, mapper.objects(boxes, f"{options.root} ({sample_id})"), layout=layout
            )

        yield guarded(sample_id, split, build)

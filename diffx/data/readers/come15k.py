"""COME15K: RGB + depth per image, a binary saliency map, and COCO instances of class 'foreground'."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from diffx.data.images import decode_array, encode_png, read_file_bytes
from diffx.data.readers.base import (
    CategoryMapper,
    Pending,
    ReadContext,
    assemble,
    encode_modality,
    guarded,
    load_coco,
    load_modalities,
)
from diffx.data.readers.options import Extension, ReaderOptions
from diffx.data.sample import Rejected, Sample
from diffx.errors import ConfigError, DataError


class Come15kSource(ReaderOptions):
    """COME15K: RGB + depth + saliency GT, COCO instance JSON with the single class 'foreground'."""

    format: Literal["come15k"] = "come15k"
    root: str
    splits: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "train": {
                "rgb": "train/imgs_right",
                "depth": "train/depths",
                "saliency": "train/gt_right",
                "annotations": "annotations/COME15K-Train.json",
            },
        }
    )
    depth_extension: Extension = ".png"
    saliency_extension: Extension = ".png"
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


def read(options: Come15kSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    names = ctx.spec.modality_names
    unknown = [n for n in names if n not in ("rgb", "depth")]
    if unknown:
        raise ConfigError(f"data.modalities: COME15K holds rgb and depth, not {unknown}")
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    for split, folders in options.splits.items():
        missing = [k for k in ("rgb", "depth", "annotations") if k not in folders]
        if missing:
            raise ConfigError(f"ingest.source.splits.{split}: missing {missing}")
        coco_path = os.path.join(options.root, folders["annotations"])
        coco = load_coco(coco_path)
        for entry in coco.images:
            file_name = os.path.basename(entry["file_name"])
            sample_id = os.path.splitext(file_name)[0]
            boxes = coco.boxes[entry.get("id")]

            def build(
                file_name=file_name, sample_id=sample_id, boxes=boxes, split=split, folders=folders, coco_path=coco_path
            ) -> Sample:
                images = (
                    load_modalities({"rgb": os.path.join(options.root, folders["rgb"], file_name)}, ctx)
                    if "rgb" in names
                    else {}
                )
                if "depth" in names:
                    depth_path = os.path.join(options.root, folders["depth"], sample_id + options.depth_extension)
                    depth = decode_array(read_file_bytes(depth_path), depth_path)
                    if depth.ndim == 3:  # some releases store depth as grey in 3 channels
                        depth = depth[..., 0] if depth.shape[2] == 3 else depth
                    images["depth"] = encode_modality(depth, "depth", depth_path, ctx)
                layout = None
                if ctx.spec.layout_kind == "saliency":
                    if "saliency" not in folders:
                        raise DataError(coco_path, "layout_kind saliency needs a 'saliency' folder for the split")
                    sal_path = os.path.join(options.root, folders["saliency"], sample_id + options.saliency_extension)
                    saliency = decode_array(read_file_bytes(sal_path), sal_path)
                    saliency = saliency[..., 0] if saliency.ndim == 3 else saliency
                    layout = encode_png(np.where(saliency > 127, 255, 0).astype(np.uint8), sal_path, ctx.compress_level)
                ordered = {n: images[n] for n in names}
                objects = mapper.objects(boxes, f"{coco_path} ({sample_id})")
                return assemble(sample_id, split, ordered, objects, layout=layout, annotation=coco_path)

            yield guarded(sample_id, split, build)

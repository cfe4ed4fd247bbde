"""FLIR ADAS v2.

RGB and thermal are different cameras with different fields of view and no registration, and only
the video test set pairs them frame by frame. So pairing (``rgb_to_thermal_vid_map.json``) and
alignment (``rgb_crop``: the RGB region that covers the thermal view, resized to the thermal frame)
are explicit options; without them only thermal can be ingested. Boxes come from the thermal COCO
file and therefore live in the thermal frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from diffx.data.images import decode_array, read_file_bytes
from diffx.data.readers.base import (
    CategoryMapper,
    Pending,
    ReadContext,
    assemble,
    encode_modality,
    guarded,
    load_coco,
)
from diffx.data.readers.options import ReaderOptions
from diffx.data.sample import Rejected, Sample
from diffx.errors import ConfigError, DataError


class FlirSource(ReaderOptions):
    """FLIR ADAS v2. RGB and thermal are not pixel-aligned, so pairing and alignment are explicit."""

    format: Literal["flir"] = "flir"
    root: str
    splits: dict[str, str] = Field(
        default_factory=lambda: {"test": "video_{modality}_test"},
        description="split -> folder pattern; '{modality}' becomes rgb or thermal",
    )
    pairing: Literal["video_map", "thermal_only"] = "video_map"
    rgb_crop: tuple[int, int, int, int] | None = Field(
        default=None,
        description="x0,y0,x1,y1 of the RGB frame that covers the thermal field of view; required with rgb",
    )
    category_map: dict[str, str] = Field(default_factory=lambda: {"bike": "bicycle"})
    ignore_categories: list[str] = Field(default_factory=list)


def _align_rgb(array: np.ndarray, crop: tuple[int, int, int, int], size: tuple[int, int], source: str) -> np.ndarray:
    x0, y0, x1, y1 = crop
    height, width = array.shape[:2]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise DataError(source, f"rgb_crop {list(crop)} does not fit the {width}x{height} RGB frame")
    region = Image.fromarray(array[y0:y1, x0:x1])
    return np.asarray(region.resize(size, Image.Resampling.BICUBIC))


def read(options: FlirSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    names = ctx.spec.modality_names
    if "rgb" in names and options.pairing != "video_map":
        raise ConfigError(
            "ingest.source.pairing: FLIR train/val RGB and thermal are not paired; "
            "use pairing: video_map (video test set) or drop rgb from data.modalities"
        )
    if "rgb" in names and options.rgb_crop is None:
        raise ConfigError(
            "ingest.source.rgb_crop: FLIR RGB is not pixel-aligned with thermal; give the RGB "
            "region (x0, y0, x1, y1) that covers the thermal field of view"
        )
    unknown = [n for n in names if n not in ("rgb", "thermal")]
    if unknown:
        raise ConfigError(f"data.modalities: FLIR holds rgb and thermal, not {unknown}")
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    thermal_to_rgb: dict[str, str] = {}
    if "rgb" in names:
        map_path = os.path.join(options.root, "rgb_to_thermal_vid_map.json")
        if not os.path.isfile(map_path):
            raise DataError(map_path, "pairing file not found (needed for pairing: video_map)")
        with open(map_path, encoding="utf-8") as handle:
            try:
                rgb_to_thermal = json.load(handle)
            except json.JSONDecodeError as err:
                raise DataError(map_path, f"not valid JSON: {err.msg}", line=err.lineno) from None
        thermal_to_rgb = {os.path.basename(t): os.path.basename(r) for r, t in rgb_to_thermal.items()}
    for split, pattern in options.splits.items():
        thermal_dir = os.path.join(options.root, pattern.format(modality="thermal"))
        rgb_dir = os.path.join(options.root, pattern.format(modality="rgb"))
        coco_path = os.path.join(thermal_dir, "coco.json")
        coco = load_coco(coco_path)
        for entry in coco.images:
            file_name = entry["file_name"]
            base = os.path.basename(file_name)
            sample_id = os.path.splitext(base)[0]
            boxes = coco.boxes[entry.get("id")]

            def build(
                file_name=file_name,
                base=base,
                sample_id=sample_id,
                boxes=boxes,
                split=split,
                thermal_dir=thermal_dir,
                rgb_dir=rgb_dir,
                coco_path=coco_path,
            ) -> Sample:
                thermal_path = os.path.join(thermal_dir, file_name)
                thermal = decode_array(read_file_bytes(thermal_path), thermal_path)
                images = {}
                if "thermal" in names:
                    images["thermal"] = encode_modality(thermal, "thermal", thermal_path, ctx)
                if "rgb" in names:
                    rgb_name = thermal_to_rgb.get(base)
                    if rgb_name is None:
                        raise DataError(
                            thermal_path, "no RGB frame paired with this thermal frame in rgb_to_thermal_vid_map.json"
                        )
                    rgb_path = os.path.join(rgb_dir, "data", rgb_name)
                    rgb = decode_array(read_file_bytes(rgb_path), rgb_path)
                    size = (thermal.shape[1], thermal.shape[0])
                    aligned = _align_rgb(rgb, options.rgb_crop, size, rgb_path)  # type: ignore[arg-type]
                    images["rgb"] = encode_modality(aligned, "rgb", rgb_path, ctx)
                ordered = {n: images[n] for n in names}
                objects = mapper.objects(boxes, f"{coco_path} ({sample_id})")
                return assemble(sample_id, split, ordered, objects, annotation=coco_path)

            yield guarded(sample_id, split, build)

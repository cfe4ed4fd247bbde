"""SUN RGB-D style RGB + 16-bit depth, with optional VoteNet 2D boxes.

SUN RGB-D rotates the 16 depth bits by 3 (``mm = (v >> 3) | (v << 13)``); we undo it so canonical
depth is plain millimetres. RGB files carry JPEG bytes under a '.png' name, so decoders must sniff.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from diffx.data.images import decode_array, read_file_bytes
from diffx.data.readers.base import (
    Box,
    CategoryMapper,
    Pending,
    ReadContext,
    assemble,
    encode_modality,
    guarded,
    load_modalities,
    require_dir,
)
from diffx.data.readers.options import ReaderOptions
from diffx.data.sample import Rejected, Sample
from diffx.errors import ConfigError, DataError


class SunRgbdSource(ReaderOptions):
    """SUN RGB-D style: RGB + 16-bit depth with rotated bits; optional VoteNet 2D boxes."""

    format: Literal["sunrgbd"] = "sunrgbd"
    root: str
    splits: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "train": {"rgb": "train/color", "depth": "train_depth"},
            "val": {"rgb": "val/color", "depth": "val_depth"},
        }
    )
    labels: str | None = Field(default=None, description="folder of VoteNet label txt files (6-digit ids)")
    decode_depth_bits: bool = Field(default=True, description="undo SUN RGB-D's 3-bit rotation -> millimetres")
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


def decode_depth_bits(raw: np.ndarray) -> np.ndarray:
    value = raw.astype(np.uint32)
    return (((value >> 3) | (value << 13)) & 0xFFFF).astype(np.uint16)


def parse_votenet_labels(path: str, width: int, height: int) -> list[tuple[str, Box]]:
    """13 fields per line: class, 2D box (x, y, w, h), centroid, half-sizes, heading. 2D boxes clipped."""
    objects: list[tuple[str, Box]] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 13:
                raise DataError(path, f"expected 13 fields (class, 2D box, 3D box), got {len(parts)}", line=lineno)
            try:
                x, y, w, h = (float(v) for v in parts[1:5])
            except ValueError:
                raise DataError(path, "2D box fields must be numbers", line=lineno) from None
            # VoteNet's extraction lets 2D boxes of objects cut by the frame run past it; clip to the frame.
            box = (max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height)))
            objects.append((parts[0], box))
    return objects


def read(options: SunRgbdSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    names = ctx.spec.modality_names
    unknown = [n for n in names if n not in ("rgb", "depth")]
    if unknown:
        raise ConfigError(f"data.modalities: SUN RGB-D holds rgb and depth, not {unknown}")
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    for split, folders in options.splits.items():
        rgb_dir = os.path.join(options.root, folders["rgb"])
        depth_dir = os.path.join(options.root, folders["depth"])
        require_dir(rgb_dir, f"rgb ({split})")
        require_dir(depth_dir, f"depth ({split})")
        for name in sorted(os.listdir(rgb_dir)):
            stem = os.path.splitext(name)[0]
            if not stem.isdigit():
                continue
            sample_id = f"{split}-{stem}"
            padded = f"{int(stem):06d}"

            def build(
                name=name, sample_id=sample_id, padded=padded, split=split, rgb_dir=rgb_dir, depth_dir=depth_dir
            ) -> Sample:
                images = load_modalities({"rgb": os.path.join(rgb_dir, name)}, ctx) if "rgb" in names else {}
                if "depth" in names:
                    depth_path = os.path.join(depth_dir, f"{padded}.png")
                    depth = decode_array(read_file_bytes(depth_path), depth_path)
                    if options.decode_depth_bits:
                        depth = decode_depth_bits(depth)
                    images["depth"] = encode_modality(depth, "depth", depth_path, ctx)
                ordered = {n: images[n] for n in names}
                first = next(iter(ordered.values()))
                boxes: list[tuple[str, Box]] = []
                label_path = None
                if options.labels is not None:
                    label_path = os.path.join(options.root, options.labels, f"{padded}.txt")
                    if os.path.isfile(label_path):
                        boxes = parse_votenet_labels(label_path, first.width, first.height)
                objects = mapper.objects(boxes, label_path or f"labels ({sample_id})")
                return assemble(sample_id, split, ordered, objects, annotation=label_path)

            yield guarded(sample_id, split, build)

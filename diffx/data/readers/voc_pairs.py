"""LLVIP and M3FD originals: paired image folders plus one Pascal VOC XML per pair."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from diffx.data.readers.base import (
    CategoryMapper,
    ReadContext,
    assemble,
    guarded,
    load_modalities,
    parse_voc,
    require_dir,
)
from diffx.data.sample import Rejected, Sample
from diffx.errors import DataError
from diffx.section import Section


class VocPairsSource(Section):
    """LLVIP / M3FD originals: paired folders with one Pascal VOC XML per pair, shared by all modalities."""

    format: Literal["voc_pairs"] = "voc_pairs"
    root: str
    modalities: dict[str, str] = Field(description="modality -> folder; '{split}' is substituted")
    annotations: str = "Annotations"
    splits: list[str] = Field(default_factory=lambda: ["train"])
    extension: str = ".jpg"
    one_based: bool = Field(default=True, description="VOC pixel indices start at 1 (shifted to 0-based)")
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)


def read(options: VocPairsSource, ctx: ReadContext) -> Iterator[Sample | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    ann_dir = os.path.join(options.root, options.annotations)
    require_dir(ann_dir, "annotation")
    for split in options.splits:
        folders = {m: os.path.join(options.root, f.format(split=split)) for m, f in options.modalities.items()}
        for folder in folders.values():
            require_dir(folder, f"image ({split})")
        first = next(iter(folders.values()))
        ids = sorted(os.path.splitext(n)[0] for n in os.listdir(first) if n.endswith(options.extension))
        if not ids:
            raise DataError(first, f"no '*{options.extension}' images for split {split!r}")
        for sample_id in ids:

            def build(sample_id=sample_id, split=split, folders=folders) -> Sample:
                xml = os.path.join(ann_dir, f"{sample_id}.xml")
                size, boxes = parse_voc(xml, options.one_based)
                images = load_modalities(
                    {m: os.path.join(f, sample_id + options.extension) for m, f in folders.items()}, ctx
                )
                sample = assemble(sample_id, split, images, mapper.objects(boxes, xml))
                if size is not None and size != (sample.width, sample.height):
                    raise DataError(
                        xml, f"<size> says {size[0]}x{size[1]}, images are {sample.width}x{sample.height}", field="size"
                    )
                return sample

            yield guarded(sample_id, split, build)

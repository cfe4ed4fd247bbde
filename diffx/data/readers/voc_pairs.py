"""LLVIP and M3FD originals: paired image folders plus one Pascal VOC XML per pair."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator

from diffx.data.readers.base import (
    CategoryMapper,
    Pending,
    ReadContext,
    assemble,
    guarded,
    load_modalities,
    parse_voc,
    require_dir,
)
from diffx.data.readers.options import Extension, ReaderOptions, check_templates, id_from_file_name, per_modality
from diffx.data.sample import Rejected, Sample
from diffx.errors import DataError


class VocPairsSource(ReaderOptions):
    """LLVIP / M3FD originals: paired folders with one Pascal VOC XML per pair, shared by all modalities."""

    format: Literal["voc_pairs"] = "voc_pairs"
    root: str
    modalities: dict[str, str] = Field(description="modality -> folder; '{split}' is substituted")
    annotations: str = "Annotations"
    splits: list[str] = Field(default_factory=lambda: ["train"])
    extension: Extension = ".jpg"
    filename_template: str | dict[str, str] | None = Field(
        default=None,
        description="file name of a pair's image from its {id}, one for all modalities or one per modality "
        "(e.g. {rgb: '{id}_visible.png', thermal: '{id}_lwir.png'}); null = '{id}' + extension",
    )
    one_based: bool = Field(default=True, description="VOC pixel indices start at 1 (shifted to 0-based)")
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)

    @field_validator("filename_template")
    @classmethod
    def _known_fields(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        return check_templates(value, {"id"})  # type: ignore[return-value]


def read(options: VocPairsSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    ann_dir = os.path.join(options.root, options.annotations)
    require_dir(ann_dir, "annotation")
    templates = per_modality(
        options.filename_template or "{id}" + options.extension,
        list(options.modalities),
        "ingest.source.filename_template",
    )
    listing = next(iter(templates.values()))
    for split in options.splits:
        folders = {m: os.path.join(options.root, f.format(split=split)) for m, f in options.modalities.items()}
        for folder in folders.values():
            require_dir(folder, f"image ({split}; list only the splits this copy has in ingest.source.splits)")
        first = next(iter(folders.values()))
        ids = sorted(i for i in (id_from_file_name(n, listing) for n in os.listdir(first)) if i is not None)
        if not ids:
            raise DataError(first, f"no images named like {listing!r} for split {split!r}")
        for sample_id in ids:

            def build(sample_id=sample_id, split=split, folders=folders) -> Sample:
                xml = os.path.join(ann_dir, f"{sample_id}.xml")
                size, boxes = parse_voc(xml, options.one_based)
                images = load_modalities(
                    {m: os.path.join(f, templates[m].format(id=sample_id)) for m, f in folders.items()}, ctx
                )
                sample = assemble(sample_id, split, images, mapper.objects(boxes, xml), annotation=xml)
                if size is not None and size != (sample.width, sample.height):
                    raise DataError(
                        xml, f"<size> says {size[0]}x{size[1]}, images are {sample.width}x{sample.height}", field="size"
                    )
                return sample

            yield guarded(sample_id, split, build)

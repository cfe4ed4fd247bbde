"""Generic paired folders + one COCO JSON per split (also the bundled demo's on-disk format)."""

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
    load_coco,
    load_layout,
    load_modalities,
)
from diffx.data.sample import Rejected, Sample
from diffx.section import Section


class CocoFoldersSource(Section):
    """Paired image folders (one per modality, same file names) plus one COCO JSON per split."""

    format: Literal["coco_folders"] = "coco_folders"
    root: str
    modalities: dict[str, str] = Field(description="modality name -> folder (relative to root)")
    annotations: dict[str, str] = Field(description="split -> COCO JSON (relative to root)")
    filename_template: str = Field(
        default="{file_name}", description="maps a COCO file_name to the file on disk, e.g. 'M3FD_{file_name}'"
    )
    category_map: dict[str, str] = Field(default_factory=dict, description="source class -> our class")
    ignore_categories: list[str] = Field(default_factory=list)
    layout: str | None = Field(
        default=None,
        description="folder of dense layout maps (8-bit grey PNGs, same file names as the images; relative to root)",
    )


def read(options: CocoFoldersSource, ctx: ReadContext) -> Iterator[Sample | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    for split, ann_rel in options.annotations.items():
        ann_path = os.path.join(options.root, ann_rel)
        coco = load_coco(ann_path)
        for entry in coco.images:
            file_name = entry["file_name"]
            sample_id = os.path.splitext(os.path.basename(file_name))[0]
            on_disk = options.filename_template.format(file_name=file_name, stem=sample_id)
            paths = {m: os.path.join(options.root, folder, on_disk) for m, folder in options.modalities.items()}
            boxes = coco.boxes[entry.get("id")]

            layout_path = os.path.join(options.root, options.layout, on_disk) if options.layout else None

            def build(
                paths=paths, boxes=boxes, sample_id=sample_id, split=split, ann_path=ann_path, layout_path=layout_path
            ) -> Sample:
                images = load_modalities(paths, ctx)
                layout = load_layout(layout_path, ctx) if layout_path else None
                return assemble(
                    sample_id, split, images, mapper.objects(boxes, f"{ann_path} ({sample_id})"), layout=layout
                )

            yield guarded(sample_id, split, build)

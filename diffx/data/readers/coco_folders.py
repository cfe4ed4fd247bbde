"""Generic paired folders + one COCO JSON per split (also the bundled demo's on-disk format)."""

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
    load_coco,
    load_layout,
    load_modalities,
)
from diffx.data.readers.options import ReaderOptions, check_templates, per_modality, sample_ids, stem_id
from diffx.data.sample import Rejected, Sample


class CocoFoldersSource(ReaderOptions):
    """Paired image folders (one per modality, same file names) plus one COCO JSON per split."""

    format: Literal["coco_folders"] = "coco_folders"
    root: str
    modalities: dict[str, str] = Field(description="modality name -> folder (relative to root)")
    annotations: dict[str, str] = Field(description="split -> COCO JSON (relative to root)")
    filename_template: str | dict[str, str] = Field(
        default="{file_name}",
        description="the file on disk for an image entry, one template for all modalities or one per modality; "
        "fields: {file_name}, {stem} (its base name without extension), {dir} (its folder part); "
        "e.g. 'M3FD_{file_name}' or {rgb: '{dir}/visible/{stem}.jpg', thermal: '{dir}/lwir/{stem}.jpg'}",
    )
    file_name_key: str = Field(
        default="file_name", description="the image entry's key that holds its file name (INSANet's KAIST: im_name)"
    )
    ids: Literal["auto", "stem", "path"] = Field(
        default="auto",
        description="sample id: the base name without extension (stem), the file name without extension (path), "
        "or auto: stem unless two images share one (KAIST's set/V/I names), then path",
    )
    category_map: dict[str, str] = Field(default_factory=dict, description="source class -> our class")
    ignore_categories: list[str] = Field(default_factory=list)
    layout: str | None = Field(
        default=None,
        description="folder of dense layout maps (8-bit grey PNGs, same file names as the images; relative to root)",
    )

    @field_validator("filename_template")
    @classmethod
    def _known_fields(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        return check_templates(value, TEMPLATE_FIELDS)  # type: ignore[return-value]


TEMPLATE_FIELDS = {"file_name", "stem", "dir"}


def read(options: CocoFoldersSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    templates = per_modality(options.filename_template, list(options.modalities), "ingest.source.filename_template")
    layout_template = next(iter(templates.values()))  # a layout map is named like the first modality's image
    indexes = []
    for split, ann_rel in options.annotations.items():  # every split first: ids must not collide across splits
        ann_path = os.path.join(options.root, ann_rel)
        indexes.append((split, ann_path, load_coco(ann_path, options.file_name_key)))
    names = [entry[options.file_name_key] for _, _, coco in indexes for entry in coco.images]
    ids = iter(sample_ids(names, options.ids))
    for split, ann_path, coco in indexes:
        for entry in coco.images:
            file_name = entry[options.file_name_key]
            sample_id = next(ids)
            fields = {
                "file_name": file_name,
                "stem": stem_id(file_name),
                "dir": os.path.dirname(file_name),
            }
            paths = {
                m: os.path.join(options.root, folder, templates[m].format(**fields))
                for m, folder in options.modalities.items()
            }
            boxes = coco.boxes[entry.get("id")]
            layout_path = (
                os.path.join(options.root, options.layout, layout_template.format(**fields)) if options.layout else None
            )

            def build(
                paths=paths, boxes=boxes, sample_id=sample_id, split=split, ann_path=ann_path, layout_path=layout_path
            ) -> Sample:
                images = load_modalities(paths, ctx)
                layout = load_layout(layout_path, ctx) if layout_path else None
                objects = mapper.objects(boxes, f"{ann_path} ({sample_id})")
                return assemble(sample_id, split, images, objects, layout=layout, annotation=ann_path)

            yield guarded(sample_id, split, build)

"""The layout the original DiffX code trains from.

``Main/<split>.txt`` lists ids; ``JPEGImages_<MOD>/<id>.jpg`` per modality; ``labels/<id>.txt`` (YOLO,
FLIR-aligned) or ``labels/<id>.png`` (MFNet 9-class label map, or a saliency mask); ``sobel/<id>.png``
edge maps; ``caption/<id>.txt`` captions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from diffx.data.images import decode_array, encode_png, read_file_bytes
from diffx.data.readers.base import (
    CategoryMapper,
    Pending,
    ReadContext,
    assemble,
    boxes_from_label_map,
    guarded,
    load_modalities,
    parse_yolo,
    read_id_list,
)
from diffx.data.readers.options import Extension, ReaderOptions, check_templates, per_modality
from diffx.data.sample import Rejected, Sample
from diffx.errors import DataError


class DiffxFolderSource(ReaderOptions):
    """The original DiffX layout: Main/<split>.txt, JPEGImages_<MOD>/<id>.jpg, labels/, sobel/, caption/."""

    format: Literal["diffx_folder"] = "diffx_folder"
    root: str
    modalities: dict[str, str] = Field(description="modality -> the <MOD> suffix of JPEGImages_<MOD>")
    splits: list[str] = Field(default_factory=lambda: ["train", "val"])
    extension: Extension = ".jpg"
    filename_template: str | dict[str, str] | None = Field(
        default=None,
        description="file name of an id's image in JPEGImages_<MOD>, one for all modalities or one per modality; "
        "null = '{id}' + extension",
    )
    labels: Literal["yolo", "label_png", "saliency", "none"] = "yolo"
    label_classes: list[str] = Field(
        default_factory=lambda: ["person", "bicycle", "car"],
        description="class names by id in the label files (YOLO ids or label-PNG pixel values)",
    )
    box_classes: list[str] | None = Field(
        default=None, description="label_png: which classes become boxes (connected components)"
    )
    min_component_pixels: int = 16
    layout: Literal["none", "sobel", "labels", "render"] = Field(
        default="none",
        description="the dense layout: sobel/<id> edge maps, the label maps, or render/<id> (3DDFA face renderings)",
    )
    captions: bool = True
    category_map: dict[str, str] = Field(default_factory=dict)
    ignore_categories: list[str] = Field(default_factory=list)

    @field_validator("filename_template")
    @classmethod
    def _known_fields(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        return check_templates(value, {"id"})


def _find(folder: str, sample_id: str, extensions: tuple[str, ...]) -> str:
    for ext in extensions:
        path = os.path.join(folder, sample_id + ext)
        if os.path.isfile(path):
            return path
    raise DataError(os.path.join(folder, sample_id + extensions[0]), "file not found")


def _grey(path: str) -> tuple[np.ndarray, str]:
    array = decode_array(read_file_bytes(path), path)
    if array.ndim == 3:
        array = array[..., 0]
    return array, path


def read(options: DiffxFolderSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    root = options.root
    templates = per_modality(
        options.filename_template or "{id}" + options.extension,
        list(options.modalities),
        "ingest.source.filename_template",
    )
    for split in options.splits:
        for sample_id in read_id_list(os.path.join(root, "Main", f"{split}.txt")):

            def build(sample_id=sample_id, split=split) -> Sample:
                images = load_modalities(
                    {
                        m: os.path.join(root, f"JPEGImages_{suffix}", templates[m].format(id=sample_id))
                        for m, suffix in options.modalities.items()
                    },
                    ctx,
                )
                first = next(iter(images.values()))
                labels_dir = os.path.join(root, "labels")
                boxes: list = []
                label_map = None
                path = None
                if options.labels == "yolo":
                    path = os.path.join(labels_dir, f"{sample_id}.txt")
                    boxes = parse_yolo(path, first.width, first.height, options.label_classes)
                elif options.labels in ("label_png", "saliency"):
                    label_map, path = _grey(_find(labels_dir, sample_id, (".png",)))
                    if options.labels == "saliency":
                        label_map = (label_map > 127).astype(np.uint8)
                    box_classes = options.box_classes or options.label_classes[1:]
                    boxes = boxes_from_label_map(
                        label_map, options.label_classes, box_classes, options.min_component_pixels
                    )
                layout = None
                if options.layout == "sobel":
                    array, path = _grey(_find(os.path.join(root, "sobel"), sample_id, (".png", ".jpg")))
                    layout = encode_png(array, path, ctx.compress_level)
                elif options.layout == "render":
                    array, path = _grey(_find(os.path.join(root, "render"), sample_id, (".png", ".jpg")))
                    layout = encode_png(array, path, ctx.compress_level)
                elif options.layout == "labels":
                    if label_map is None:
                        raise DataError(root, "layout: labels needs labels: label_png or saliency")
                    layout = encode_png(label_map, os.path.join(labels_dir, f"{sample_id}.png"), ctx.compress_level)
                caption = None
                if options.captions:
                    cap_path = os.path.join(root, "caption", f"{sample_id}.txt")
                    if os.path.isfile(cap_path):
                        with open(cap_path, encoding="utf-8") as handle:
                            caption = handle.read().strip() or None
                return assemble(
                    sample_id,
                    split,
                    images,
                    mapper.objects(boxes, f"{root}/labels ({sample_id})"),
                    layout=layout,
                    caption=caption,
                    caption_source="human",
                    annotation=path if options.labels != "none" else None,
                )

            yield guarded(sample_id, split, build)

"""KAIST Multispectral Pedestrian (the official release layout and bbGt txt annotations).

``images/setXX/VYYY/{visible,lwir}/IZZZZZ.jpg`` are aligned 640x512 pairs from a beam-splitter rig;
``annotations/setXX/VYYY/IZZZZZ.txt`` hold Piotr's-toolbox bbGt lines (``label x y w h occ vx vy vw vh ign
ang``, pixels, top-left origin) after a ``% bbGt version=3`` header; ``imageSets/*.txt`` list frames as
``setXX/VYYY/IZZZZZ``. Frame numbers restart in every video, so the sample id is that whole relative name.
The LWIR JPEGs are three nearly (not exactly) equal channels: give the thermal modality a channel rule
(``channels: {thermal: mean}``), which this reader does not assume for you.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from diffx.data.boxes import clip_box
from diffx.data.readers.base import (
    CategoryMapper,
    Pending,
    ReadContext,
    SourceBox,
    assemble,
    guarded,
    load_modalities,
    read_id_list,
    require_dir,
)
from diffx.data.readers.options import Extension, ReaderOptions
from diffx.data.sample import Rejected, Sample
from diffx.errors import DataError


class KaistSource(ReaderOptions):
    """KAIST multispectral: images/setXX/VYYY/<modality folder>/IZZZZZ.jpg + bbGt txt annotations."""

    format: Literal["kaist"] = "kaist"
    root: str
    modalities: dict[str, str] = Field(
        default_factory=lambda: {"rgb": "visible", "thermal": "lwir"},
        description="modality -> its folder inside each images/setXX/VYYY/",
    )
    images: str = Field(default="images", description="folder of setXX/VYYY/ video folders (relative to root)")
    annotations: str = Field(default="annotations", description="folder of setXX/VYYY/IZZZZZ.txt (relative to root)")
    splits: dict[str, str] = Field(
        default_factory=dict,
        description="split -> image-set file of 'setXX/VYYY/IZZZZZ' lines (e.g. {train: imageSets/train-all-02.txt,"
        " test: imageSets/test-all-20.txt}); empty = every frame under images/, as split 'train'",
    )
    extension: Extension = ".jpg"
    drop_ignored: bool = Field(default=False, description="leave out boxes whose bbGt 'ign' flag is 1")
    clip_boxes: bool = Field(
        default=True, description="clip boxes to the frame (a few KAIST boxes run past the edge); empty ones drop"
    )
    category_map: dict[str, str] = Field(default_factory=dict, description="e.g. {cyclist: person}")
    ignore_categories: list[str] = Field(
        default_factory=list, description="KAIST labels: person, people, cyclist, 'person?' (unsure)"
    )


def parse_bbgt(path: str, drop_ignored: bool) -> list[SourceBox]:
    """(label, xyxy) per bbGt line; the header and blank lines are skipped, errors name the line."""
    if not os.path.isfile(path):
        raise DataError(path, "KAIST annotation file not found (every frame has one, if only with the header)")
    objects: list[SourceBox] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or parts[0].startswith("%"):
                continue
            if len(parts) < 5:
                raise DataError(path, f"expected 'label x y w h ...' (bbGt), got {len(parts)} field(s)", line=lineno)
            try:
                x, y, w, h = (float(v) for v in parts[1:5])
                ignored = len(parts) > 10 and int(float(parts[10])) == 1
            except ValueError:
                raise DataError(path, "x y w h (and ign) must be numbers", line=lineno) from None
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise DataError(path, "box values must be finite", line=lineno)
            if drop_ignored and ignored:
                continue
            said = {}
            if len(parts) > 5:
                try:
                    said["occlusion"] = int(float(parts[5]))
                except ValueError:
                    raise DataError(path, f"occ must be a number, got {parts[5]!r}", line=lineno) from None
            objects.append((parts[0], (x, y, x + w, y + h), said))
    return objects


def _clipped(boxes: list[SourceBox], width: int, height: int) -> list[SourceBox]:
    out: list[SourceBox] = []
    for name, box, *said in boxes:
        inside = clip_box(box, width, height)
        if inside is not None:
            out.append((name, inside, *said))  # type: ignore[arg-type]
    return out


def _all_frames(options: KaistSource) -> list[str]:
    """Every setXX/VYYY/IZZZZZ under images/, from the first modality's folders, sorted."""
    images = os.path.join(options.root, options.images)
    require_dir(images, "KAIST images")
    folder = next(iter(options.modalities.values()))
    frames = []
    for set_name in sorted(os.listdir(images)):
        set_dir = os.path.join(images, set_name)
        if not os.path.isdir(set_dir):
            continue
        for video in sorted(os.listdir(set_dir)):
            frame_dir = os.path.join(set_dir, video, folder)
            if os.path.isdir(frame_dir):
                frames += [
                    f"{set_name}/{video}/{os.path.splitext(n)[0]}"
                    for n in sorted(os.listdir(frame_dir))
                    if n.endswith(options.extension)
                ]
    if not frames:
        raise DataError(images, f"no setXX/VYYY/{folder}/*{options.extension} frames found")
    return frames


def read(options: KaistSource, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    mapper = CategoryMapper(ctx.spec, options.category_map, options.ignore_categories)
    if options.splits:
        splits = {s: read_id_list(os.path.join(options.root, f)) for s, f in options.splits.items()}
    else:
        splits = {"train": _all_frames(options)}
    for split, frames in splits.items():
        for frame in frames:
            sample_id = frame.strip().strip("/").removesuffix(options.extension)
            video, _, name = sample_id.rpartition("/")

            def build(sample_id=sample_id, split=split, video=video, name=name) -> Sample:
                paths = {
                    m: os.path.join(options.root, options.images, video, folder, name + options.extension)
                    for m, folder in options.modalities.items()
                }
                images = load_modalities(paths, ctx)
                ann = os.path.join(options.root, options.annotations, video, f"{name}.txt")
                boxes = parse_bbgt(ann, options.drop_ignored)
                first = next(iter(images.values()))
                if options.clip_boxes:
                    boxes = _clipped(boxes, first.width, first.height)
                return assemble(sample_id, split, images, mapper.objects(boxes, ann), annotation=ann)

            yield guarded(sample_id, split, build)

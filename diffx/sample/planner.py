"""The layout planner: what to generate, decided (and written down) before anything is generated.

Each planned row is a layout (boxes + classes in pixels, and the dense map when the data has one), a caption,
a frame size, a seed, its shard and row, and the id of the real sample it came from. Layouts come from the
real data with augmentation (flip, jitter, box dropout, pasting boxes from other samples without overlapping
beyond a limit), steered towards per-class targets ("bicycle: 2x" doubles bicycles per sample relative to the
real data), or from a user's COCO JSON / JSONL. A dense map is flipped with its boxes; box edits that the map
could not follow (jitter, dropout, pasting) are off for data with a dense layout, so the boxes and the map
always describe the same scene. With a frame resolution, every layout is resized and cropped (at a seeded
random place on the 8-px grid) to the model's frame, as training saw it. The plan is a small Parquet file and
a pure function of (source, params, seed).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from diffx import fsio
from diffx.caption.template import layout_sentences, when_phrase
from diffx.config import PlanConfig
from diffx.data.boxes import MIN_SIDE_PX, box_iou, clip_box
from diffx.data.frame import place, place_boxes, place_image
from diffx.data.images import decode_array, encode_png, read_file_bytes
from diffx.data.layout_tensors import stored_to_tensor, tensor_to_stored
from diffx.data.layouts import is_label_map, layout_problem
from diffx.data.readers.base import load_coco
from diffx.data.sample import BoxObject
from diffx.data.seeds import seed_for
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError, ShardError
from diffx.sample.segment_edits import move_segment
from diffx.shards.reader import ShardSet

log = logging.getLogger(__name__)

OBJECT = pa.struct([("bbox", pa.list_(pa.float32(), 4)), ("category", pa.string()), ("category_id", pa.int32())])
PLAN_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("shard", pa.int32()),
        ("row", pa.int32()),
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("seed", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("objects", pa.list_(OBJECT)),
        ("edited", pa.bool_()),
        ("layout", pa.binary()),  # the dense layout map (PNG) when the data has one, else null
    ]
)


@dataclass
class Layout:
    id: str
    width: int
    height: int
    objects: list[BoxObject]
    caption: str | None
    caption_source: str | None
    layout: bytes | None = None  # the dense layout map (PNG)


def source_layouts(options: PlanConfig, spec: DatasetSpec) -> list[Layout]:
    if options.layouts:
        return user_layouts(options.layouts, spec)
    shard_set = ShardSet(options.source)
    columns = ["id", "width", "height", "objects", "caption", "caption_source"]
    rows = shard_set.read_table(options.split, columns + (["layout"] if spec.layout_kind else [])).to_pylist()
    if not rows:
        raise DataError(options.source, f"split {options.split!r} has no layouts to plan from")
    return [
        Layout(
            r["id"],
            int(r["width"]),
            int(r["height"]),
            [BoxObject(tuple(o["bbox"]), o["category"], int(o["category_id"])) for o in r["objects"]],
            r["caption"],
            r["caption_source"],
            (r.get("layout") or {}).get("bytes"),
        )
        for r in rows
    ]


def _user_map(path: str, value: Any, width: int, height: int, spec: DatasetSpec) -> bytes:
    """A JSONL row's ``layout``: a PNG path (relative to the JSONL file) holding the dense map of the frame."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"the data has a {spec.layout_kind} layout: 'layout' must name its PNG file")
    file = value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(path)), value)
    data = read_file_bytes(file)
    array = decode_array(data, file)
    problem = layout_problem(array, spec)
    if problem is None and array.shape != (height, width):
        problem = f"map is {array.shape[1]}x{array.shape[0]}, the row's frame is {width}x{height}"
    if problem:
        raise DataError(file, f"layout ({spec.layout_kind}): {problem}")
    return encode_png(array, file).data


def user_layouts(path: str, spec: DatasetSpec) -> list[Layout]:
    """COCO JSON (``images`` + ``annotations``) or JSONL (one {width, height, objects, caption?, layout?} per line;
    ``layout`` names the dense map's PNG when the data has a dense layout)."""
    out: list[Layout] = []
    if path.endswith(".json"):
        if spec.layout_kind is not None:
            raise DataError(
                path,
                f"the data has a {spec.layout_kind} layout, which COCO JSON cannot carry; give the layouts as JSONL "
                "with a 'layout' PNG per line",
                field="plan.layouts",
            )
        coco = load_coco(path)
        for image in coco.images:
            objects = []
            for name, box in coco.boxes[image.get("id")]:
                if name not in spec.classes:
                    raise DataError(
                        path, f"image {image['file_name']!r}: class {name!r} is not in {list(spec.classes)}"
                    )
                objects.append(BoxObject(box, name, spec.class_id(name)))
            out.append(Layout(str(image.get("id")), int(image["width"]), int(image["height"]), objects, None, None))
        return out
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                width, height = int(data["width"]), int(data["height"])
                dense = _user_map(path, data.get("layout"), width, height, spec) if spec.layout_kind else None
                objects = [
                    BoxObject(tuple(float(v) for v in o["bbox"]), o["category"], spec.class_id(o["category"]))
                    for o in data.get("objects", [])
                ]
                out.append(
                    Layout(
                        str(data.get("id", lineno)),
                        width,
                        height,
                        objects,
                        data.get("caption"),
                        "human" if data.get("caption") else None,
                        dense,
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise DataError(
                    path, f"expected {{width, height, objects: [{{bbox, category}}]}} ({err})", line=lineno
                ) from None
    return out


def _augment(
    layout: Layout, rng: np.random.Generator, options: PlanConfig, box_edits: bool
) -> tuple[list[BoxObject], bool, bool]:
    """(objects, edited, flipped); ``box_edits`` False keeps boxes as the dense map has them (flip only)."""
    objects, edited, flipped = list(layout.objects), False, False
    if options.flip and rng.random() < options.flip:
        objects = [
            BoxObject(
                (layout.width - o.bbox[2], o.bbox[1], layout.width - o.bbox[0], o.bbox[3]), o.category, o.category_id
            )
            for o in objects
        ]
        edited = flipped = True
    if not box_edits:
        return objects, edited, flipped
    kept = []
    for obj in objects:
        if options.box_dropout and rng.random() < options.box_dropout:
            edited = True
            continue
        box = obj.bbox
        if options.jitter:
            w, h = box[2] - box[0], box[3] - box[1]
            dx, dy, ds = rng.uniform(-options.jitter, options.jitter, 3)
            cx, cy = (box[0] + box[2]) / 2 + dx * w, (box[1] + box[3]) / 2 + dy * h
            box = (cx - w * (1 + ds) / 2, cy - h * (1 + ds) / 2, cx + w * (1 + ds) / 2, cy + h * (1 + ds) / 2)
            edited = True
        clipped = clip_box(box, layout.width, layout.height, MIN_SIDE_PX)
        if clipped is not None:
            kept.append(BoxObject(clipped, obj.category, obj.category_id))
    return kept, edited, flipped


def _with_segment_moved(
    layout: Layout, rng: np.random.Generator, options: PlanConfig, spec: DatasetSpec
) -> tuple[Layout, bool]:
    """A class-preserving edit of a segmentation layout (:mod:`diffx.sample.segment_edits`), drawn with
    probability ``plan.segment_moves``; other layout kinds draw nothing and pass through."""
    if spec.layout_kind != "segmentation" or layout.layout is None or not options.segment_moves:
        return layout, False
    if rng.random() >= options.segment_moves:
        return layout, False
    result = move_segment(decode_array(layout.layout, layout.id), layout.objects, rng, options.max_paste_overlap)
    if result is None:
        return layout, False
    labels, objects = result
    return replace(layout, objects=objects, layout=encode_png(labels, layout.id).data), True


@dataclass
class Framed:
    """A planned layout in the model's frame: size, boxes and the dense map (PNG)."""

    width: int
    height: int
    objects: list[BoxObject]
    layout: bytes | None


def _in_model_frame(
    source: Layout, objects: list[BoxObject], flipped: bool, spec: DatasetSpec, rng: np.random.Generator | None
) -> Framed:
    """Flip the dense map with its boxes, then resize + crop all of them to the model's frame (a seeded random
    crop, drawn only when the data has a frame resolution, so plans without one are unchanged; centred with no
    ``rng``, where the real item is cropped the same way for paired metrics)."""
    layout = source.layout
    if layout is not None and flipped:
        layout = encode_png(np.ascontiguousarray(decode_array(layout, source.id)[:, ::-1]), source.id).data
    if spec.frame.resolution is None:
        return Framed(source.width, source.height, objects, layout)
    generator = None if rng is None else torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    placement = place(source.height, source.width, spec.frame, generator)
    boxes = torch.tensor([o.bbox for o in objects], dtype=torch.float32).reshape(-1, 4)
    ids = torch.tensor([o.category_id for o in objects], dtype=torch.int64)
    boxes, ids = place_boxes(boxes, ids, placement, spec.frame.min_box_visible)
    placed = [
        BoxObject(tuple(float(v) for v in b), spec.classes[int(i)], int(i))  # type: ignore[arg-type]
        for b, i in zip(boxes.tolist(), ids.tolist(), strict=True)
    ]
    if layout is not None:
        stored = stored_to_tensor(decode_array(layout, source.id), spec)
        moved = place_image(stored, placement, nearest=is_label_map(spec))
        layout = encode_png(tensor_to_stored(moved, spec), source.id).data
    return Framed(placement.width, placement.height, placed, layout)


def _item_row(
    index: int, source: Layout, options: PlanConfig, spec: DatasetSpec, max_objects: int, scene: str
) -> dict[str, Any]:
    """Mode one_per_item: the item as it is (no flip, jitter, dropout, paste or segment move), centred in the
    model's frame, with its own caption: the generated sample can be scored against the real one pixel by pixel."""
    framed = _in_model_frame(source, source.objects[:max_objects], False, spec, None)
    caption, caption_source = source.caption, source.caption_source or "template"
    if not caption:
        sentences = layout_sentences(framed.objects, framed.width, framed.height, "", spec.classes, scene)
        caption, caption_source = " ".join(sentences), "template"
    return _plan_row(index, options, source.id, framed, caption, caption_source, edited=False)


def _plan_row(
    index: int, options: PlanConfig, source_id: str, framed: Framed, caption: str, caption_source: str, edited: bool
) -> dict[str, Any]:
    """One row of PLAN_SCHEMA: where it goes (shard, row), its id and seed, and what to draw."""
    return {
        "index": index,
        "shard": index // options.rows_per_shard,
        "row": index % options.rows_per_shard,
        "id": f"gen-{options.seed:04d}-{index:07d}",
        "source_id": source_id,
        "seed": seed_for(options.seed, index),
        "width": framed.width,
        "height": framed.height,
        "caption": caption,
        "caption_source": caption_source,
        "objects": [
            {"bbox": list(o.bbox), "category": o.category, "category_id": o.category_id} for o in framed.objects
        ],
        "edited": edited,
        "layout": framed.layout,
    }


def plan_rows(
    options: PlanConfig, spec: DatasetSpec, max_objects: int, scene: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The planned rows (a pure function of the source layouts, the options and the seed) and the per-sample
    class counts they reach: real, target and planned."""
    unknown = sorted(set(options.class_targets) - set(spec.classes))
    if unknown:
        raise DataError(
            f"{options.source}/_manifest.json",
            f"plan.class_targets names classes {unknown} that the data does not have (it has {list(spec.classes)})",
            field="plan.class_targets",
        )
    layouts = source_layouts(options, spec)
    real = Counter(o.category for layout in layouts for o in layout.objects)
    per_sample = {c: real[c] / len(layouts) for c in spec.classes}
    target = {c: per_sample[c] * options.class_targets.get(c, 1.0) for c in spec.classes}
    weights = np.array(
        [1.0 + sum(options.class_targets.get(o.category, 1.0) - 1.0 for o in layout.objects) for layout in layouts]
    ).clip(min=0.05)
    weights /= weights.sum()
    donors = [(layout, o) for layout in layouts for o in layout.objects]
    box_edits = spec.layout_kind is None  # a dense map cannot follow jittered, dropped or pasted boxes
    planned: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    if options.mode == "one_per_item":
        rows = [_item_row(index, source, options, spec, max_objects, scene) for index, source in enumerate(layouts)]
        planned.update(o["category"] for row in rows for o in row["objects"])
    for index in range(options.num_samples if options.mode == "sample" else 0):
        rng = np.random.default_rng([options.seed, index])
        source = layouts[int(rng.choice(len(layouts), p=weights))]
        source, moved = _with_segment_moved(source, rng, options, spec)
        objects, edited, flipped = _augment(source, rng, options, box_edits)
        edited = edited or moved
        for cls in spec.classes if box_edits else ():  # paste boxes of classes behind their target
            attempts = 0
            while (
                (planned[cls] + sum(o.category == cls for o in objects)) < target[cls] * (index + 1)
                and attempts < 8
                and len(objects) < max_objects
            ):
                attempts += 1
                candidates = [d for d in donors if d[1].category == cls]
                if not candidates:
                    break
                donor_layout, donor = candidates[int(rng.integers(len(candidates)))]
                sx, sy = source.width / donor_layout.width, source.height / donor_layout.height
                box = clip_box(
                    (donor.bbox[0] * sx, donor.bbox[1] * sy, donor.bbox[2] * sx, donor.bbox[3] * sy),
                    source.width,
                    source.height,
                    MIN_SIDE_PX,
                )
                if box is None or any(box_iou(box, o.bbox) > options.max_paste_overlap for o in objects):
                    continue
                objects.append(BoxObject(box, cls, spec.class_id(cls)))
                edited = True
        framed = _in_model_frame(source, objects[:max_objects], flipped, spec, rng)
        objects = framed.objects
        edited = edited or (framed.width, framed.height) != (source.width, source.height)
        planned.update(o.category for o in objects)
        if edited or not source.caption:
            caption = " ".join(
                layout_sentences(objects, framed.width, framed.height, when_phrase(source.caption), spec.classes, scene)
            )
            caption_source = "template"
        else:
            caption, caption_source = source.caption, source.caption_source or "template"
        rows.append(_plan_row(index, options, source.id, framed, caption, caption_source, edited))
    counts = {
        "per_sample_real": {c: round(v, 4) for c, v in per_sample.items()},
        "per_sample_target": {c: round(v, 4) for c, v in target.items()},
        "per_sample_planned": {c: round(planned[c] / len(rows), 4) for c in spec.classes},
    }
    return rows, counts


def read_plan(path: str) -> tuple[list[dict[str, Any]], DatasetSpec, int]:
    """Rows, the dataset description the plan was made for, and rows per shard."""
    fs, local = fsio.get_fs(path)
    if not fs.exists(local):
        raise DataError(path, "plan not found; run the plan stage first")
    try:
        with fs.open(local, "rb") as handle:
            table = pq.read_table(handle)
        meta = json.loads((table.schema.metadata or {}).get(b"diffx_plan", b"{}"))
    except (OSError, pa.ArrowException, ValueError) as err:
        raise DataError(path, f"not a readable plan Parquet file, truncated or corrupt? ({err})") from None
    if not isinstance(meta, dict) or "dataset" not in meta:
        raise DataError(path, "not a diffx plan (no diffx_plan metadata)")
    optional = {"layout"}  # plans of box-only data made before dense layouts had no layout column
    missing = sorted(set(PLAN_SCHEMA.names) - set(table.column_names) - optional)
    if missing:
        raise DataError(path, f"plan columns {missing} missing; expected {PLAN_SCHEMA.names}")
    try:
        spec = DatasetSpec.model_validate(meta["dataset"])
        rows_per_shard = int(meta["rows_per_shard"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"plan metadata 'diffx_plan' is malformed ({err})") from None
    rows = table.to_pylist()
    check_plan_rows(rows, spec, path)
    source = meta.get("source")
    if source:
        _check_sources(rows, str(source), path)
    return rows, spec, rows_per_shard


def check_plan_rows(rows: list[dict[str, Any]], spec: DatasetSpec, path: str) -> None:
    """Every row must be drawable as written: a hand-edited or foreign plan fails here, named by row, before
    any sampling (boxes off the frame or of unknown classes would be generated silently otherwise)."""
    seen_ids: set[str] = set()
    slots: set[tuple[int, int]] = set()
    for number, row in enumerate(rows):
        where = f"row {number} (id {row.get('id')!r})"
        if not row.get("id") or row["id"] in seen_ids:
            raise DataError(path, f"{where}: ids must be non-empty and unique", field="id")
        seen_ids.add(row["id"])
        if (row["shard"], row["row"]) in slots:
            raise DataError(path, f"{where}: shard {row['shard']} row {row['row']} is planned twice", field="row")
        slots.add((row["shard"], row["row"]))
        width, height = row["width"], row["height"]
        if not (width and height and width > 0 and height > 0):
            raise DataError(path, f"{where}: frame {width}x{height}; expected positive sizes", field="width")
        _check_layout(row, spec, path, where)
        for k, obj in enumerate(row["objects"] or []):
            x0, y0, x1, y1 = obj["bbox"]
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
                raise DataError(
                    path, f"{where}: box {obj['bbox']} needs x_min < x_max, y_min < y_max", field=f"objects[{k}]"
                )
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise DataError(
                    path, f"{where}: box {obj['bbox']} lies outside the {width}x{height} frame", field=f"objects[{k}]"
                )
            if obj["category"] not in spec.classes or obj["category_id"] != spec.class_id(obj["category"]):
                raise DataError(
                    path,
                    f"{where}: class {obj['category']!r} / id {obj['category_id']} is not one of {list(spec.classes)}",
                    field=f"objects[{k}]",
                )


def _check_layout(row: dict[str, Any], spec: DatasetSpec, path: str, where: str) -> None:
    if spec.layout_kind is None:
        if row.get("layout") is not None:
            raise DataError(path, f"{where}: a layout map, but the plan's data has no dense layout", field="layout")
        return
    if row.get("layout") is None:
        raise DataError(path, f"{where}: no layout map; the data has a {spec.layout_kind} layout", field="layout")
    try:
        array = decode_array(row["layout"], f"{path} {where}")
    except DataError as err:
        raise DataError(path, f"{where}: the layout map does not decode ({err.problem})", field="layout") from None
    problem = layout_problem(array, spec)
    if problem is None and array.shape != (row["height"], row["width"]):
        problem = f"map is {array.shape[1]}x{array.shape[0]}, the row's frame is {row['width']}x{row['height']}"
    if problem:
        raise DataError(path, f"{where}: layout ({spec.layout_kind}): {problem}", field="layout")


def _check_sources(rows: list[dict[str, Any]], source: str, path: str) -> None:
    """Rows must come from the data the plan names (when that data is reachable from here)."""
    try:
        shard_set = ShardSet(source)
    except ShardError:
        log.warning("%s: the plan's source %s is not readable here; source ids are not checked", path, source)
        return
    known = set(shard_set.read_table(columns=["id"]).column("id").to_pylist())
    for number, row in enumerate(rows):
        if row["source_id"] not in known:
            raise DataError(
                path,
                f"row {number} (id {row['id']!r}): source_id {row['source_id']!r} is not in {source}",
                field="source_id",
            )

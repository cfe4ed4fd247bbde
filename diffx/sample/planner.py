"""The layout planner: what to generate, decided (and written down) before anything is generated.

Each planned row is a layout (boxes + classes in pixels), a caption, a frame size, a seed, its shard and
row, and the id of the real sample it came from. Layouts come from the real data with augmentation (flip,
jitter, box dropout, pasting boxes from other samples without overlapping beyond a limit), steered towards
per-class targets ("bicycle: 2x" doubles bicycles per sample relative to the real data), or from a user's
COCO JSON / JSONL. The plan is a small Parquet file and a pure function of (source, params, seed).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.caption.template import layout_sentences, when_phrase
from diffx.config import ConditioningConfig, PlanConfig, section_hash
from diffx.data.readers.base import load_coco
from diffx.data.sample import BoxObject
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError, ShardError
from diffx.shards.reader import ShardSet
from diffx.train.data import seed_for

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
    ]
)
MIN_SIDE_PX = 2.0


@dataclass
class Layout:
    id: str
    width: int
    height: int
    objects: list[BoxObject]
    caption: str | None
    caption_source: str | None


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clip(box: tuple[float, ...], width: int, height: int) -> tuple[float, float, float, float] | None:
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])
    return (x0, y0, x1, y1) if x1 - x0 >= MIN_SIDE_PX and y1 - y0 >= MIN_SIDE_PX else None


def source_layouts(options: PlanConfig, spec: DatasetSpec) -> list[Layout]:
    if options.layouts:
        return user_layouts(options.layouts, spec)
    shard_set = ShardSet(options.source)
    rows = shard_set.read_table(
        options.split, ["id", "width", "height", "objects", "caption", "caption_source"]
    ).to_pylist()
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
        )
        for r in rows
    ]


def user_layouts(path: str, spec: DatasetSpec) -> list[Layout]:
    """COCO JSON (``images`` + ``annotations``) or JSONL (one {width, height, objects, caption?} per line)."""
    out: list[Layout] = []
    if path.endswith(".json"):
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
                objects = [
                    BoxObject(tuple(float(v) for v in o["bbox"]), o["category"], spec.class_id(o["category"]))
                    for o in data.get("objects", [])
                ]
                out.append(
                    Layout(
                        str(data.get("id", lineno)),
                        int(data["width"]),
                        int(data["height"]),
                        objects,
                        data.get("caption"),
                        "human" if data.get("caption") else None,
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise DataError(
                    path, f"expected {{width, height, objects: [{{bbox, category}}]}} ({err})", line=lineno
                ) from None
    return out


def _augment(layout: Layout, rng: np.random.Generator, options: PlanConfig) -> tuple[list[BoxObject], bool]:
    objects, edited = list(layout.objects), False
    if options.flip and rng.random() < options.flip:
        objects = [
            BoxObject(
                (layout.width - o.bbox[2], o.bbox[1], layout.width - o.bbox[0], o.bbox[3]), o.category, o.category_id
            )
            for o in objects
        ]
        edited = True
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
        clipped = _clip(box, layout.width, layout.height)
        if clipped is not None:
            kept.append(BoxObject(clipped, obj.category, obj.category_id))
    return kept, edited


def plan(options: PlanConfig, conditioning: ConditioningConfig) -> dict[str, Any]:
    """Write the plan (Parquet) and its report; returns the report.

    The classes and modalities come from the manifest of ``options.source`` (the data the UNet trains on), the
    number of layout slots from ``conditioning``."""
    spec = ShardSet(options.source).spec
    max_objects = conditioning.max_objects
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
    planned: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for index in range(options.num_samples):
        rng = np.random.default_rng([options.seed, index])
        source = layouts[int(rng.choice(len(layouts), p=weights))]
        objects, edited = _augment(source, rng, options)
        for cls in spec.classes:  # paste boxes of classes behind their target
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
                box = _clip(
                    (donor.bbox[0] * sx, donor.bbox[1] * sy, donor.bbox[2] * sx, donor.bbox[3] * sy),
                    source.width,
                    source.height,
                )
                if box is None or any(_iou(box, o.bbox) > options.max_paste_overlap for o in objects):
                    continue
                objects.append(BoxObject(box, cls, spec.class_id(cls)))
                edited = True
        objects = objects[:max_objects]
        planned.update(o.category for o in objects)
        if edited or not source.caption:
            caption = " ".join(
                layout_sentences(objects, source.width, source.height, when_phrase(source.caption), spec.classes)
            )
            caption_source = "template"
        else:
            caption, caption_source = source.caption, source.caption_source or "template"
        rows.append(
            {
                "index": index,
                "shard": index // options.rows_per_shard,
                "row": index % options.rows_per_shard,
                "id": f"gen-{options.seed:04d}-{index:07d}",
                "source_id": source.id,
                "seed": seed_for(options.seed, index),
                "width": source.width,
                "height": source.height,
                "caption": caption,
                "caption_source": caption_source,
                "objects": [
                    {"bbox": list(o.bbox), "category": o.category, "category_id": o.category_id} for o in objects
                ],
                "edited": edited,
            }
        )
    table = pa.Table.from_pylist(rows, schema=PLAN_SCHEMA).replace_schema_metadata(
        {
            "diffx_plan": json.dumps(
                {
                    "dataset": spec.model_dump(mode="json"),
                    "rows_per_shard": options.rows_per_shard,
                    "source": None if options.layouts else options.source,
                    "params_hash": section_hash(options, extra={"max_objects": max_objects}),
                },
                sort_keys=True,
            )
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fsio.write_bytes_atomic(options.output, buffer.getvalue())
    report = {
        "rows": len(rows),
        "shards": rows[-1]["shard"] + 1,
        "edited": sum(r["edited"] for r in rows),
        "per_sample_real": {c: round(v, 4) for c, v in per_sample.items()},
        "per_sample_target": {c: round(v, 4) for c, v in target.items()},
        "per_sample_planned": {c: round(planned[c] / len(rows), 4) for c in spec.classes},
    }
    fsio.write_json_atomic(options.report, report)
    log.info(
        "planned %d samples in %d shards; per-sample objects %s",
        len(rows),
        report["shards"],
        report["per_sample_planned"],
    )
    return report


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
    missing = sorted(set(PLAN_SCHEMA.names) - set(table.column_names))
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

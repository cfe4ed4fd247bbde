"""Per-sample, per-caption and per-shard statistics tables for the quality gates.

The great_expectations suites run over these tables, not over the raw Parquet: one decode per image
gives every number an image gate needs (sizes, modes, pixel statistics, histograms, content hash, box
checks); the captions gate reads only the caption columns and decodes nothing. Decoding runs on a thread
pool (PIL and numpy release the GIL); one decode pass is the cost floor of checking content.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from diffx.config import ImageGateConfig
from diffx.data.images import decode_array, pil_to_array
from diffx.data.layouts import layout_problem
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError, ShardError
from diffx.quality import consistency
from diffx.shards.reader import ShardSet

HIST_BINS = 32


def histogram(values: np.ndarray) -> np.ndarray:
    """Normalised histogram of values in [0, 1] (grey modalities)."""
    counts, _ = np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def w1_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two histograms on [0, 1] (0 = same, 1 = all mass moved end to end)."""
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum() / len(a))


def _image_stats(
    name: str,
    data: bytes | None,
    spec_mode: str,
    max_value: int,
    width: int,
    height: int,
    objects: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], np.ndarray | None, bytes, np.ndarray | None]:
    """Stats of one modality image; ``decodable`` False (and NaN stats) when the bytes do not decode.

    Also returns the pixel values in [0, 1] (None when undecodable or off-size) for the cross-modal checks."""
    out: dict[str, Any] = {
        f"{name}_decodable": False,
        f"{name}_size_ok": False,
        f"{name}_mode_ok": False,
        f"{name}_mean": math.nan,
        f"{name}_std": math.nan,
        f"{name}_min": math.nan,
        f"{name}_max": math.nan,
        f"{name}_nonzero": math.nan,
        f"{name}_impulse": math.nan,
    }
    if data is None:
        return out, None, b"", None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            array = pil_to_array(image, name)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return out, None, b"", None
    values = array.astype(np.float32) / max_value
    out.update(
        {
            f"{name}_decodable": True,
            f"{name}_size_ok": array.shape[:2] == (height, width),
            f"{name}_mode_ok": mode == spec_mode,
            f"{name}_mean": float(values.mean()),
            f"{name}_std": float(values.std()),
            f"{name}_min": float(values.min()),
            f"{name}_max": float(values.max()),
            f"{name}_nonzero": float(np.count_nonzero(array) / array.size),
            f"{name}_impulse": consistency.impulse_fraction(values if values.ndim == 2 else values.mean(axis=2)),
        }
    )
    grey = values if values.ndim == 2 else None
    if grey is not None and objects and array.shape[:2] == (height, width):
        out[f"{name}_box_contrast"] = box_contrast(grey, objects)
    aligned = values if array.shape[:2] == (height, width) else None
    return out, (histogram(grey) if grey is not None else None), np.ascontiguousarray(array).tobytes(), aligned


def box_contrast(values: np.ndarray, objects: list[dict[str, Any]]) -> float:
    """Mean inside the boxes minus the median of the frame: warm objects (thermal) > 0, near ones (depth) < 0.

    How far a generated sample honoured its layout can be read from this without a detector: the objects
    must stand out from the background the way they do in the real data.
    """
    inside = np.zeros(values.shape, dtype=bool)
    for obj in objects:
        x0, y0, x1, y1 = (round(v) if math.isfinite(v) else 0 for v in obj["bbox"])
        inside[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    if not inside.any():
        return math.nan
    return float(values[inside].mean() - np.median(values))


def _box_stats(objects: list[dict[str, Any]], width: int, height: int, classes: tuple[str, ...]) -> dict[str, Any]:
    boxes = np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4)
    finite = bool(np.isfinite(boxes).all())
    x0, y0, x1, y1 = boxes.T
    with np.errstate(invalid="ignore", divide="ignore"):
        w, h = x1 - x0, y1 - y0
        aspect = np.maximum(w / np.where(h > 0, h, np.nan), h / np.where(w > 0, w, np.nan))
    return {
        "n_objects": len(objects),
        "boxes_finite": finite,
        "boxes_ordered": bool(((x0 < x1) & (y0 < y1)).all()),
        "boxes_inside": bool(((x0 >= 0) & (y0 >= 0) & (x1 <= width) & (y1 <= height)).all()),
        "classes_known": all(
            o["category"] in classes and o["category_id"] == classes.index(o["category"]) for o in objects
        ),
        "min_box_area": float(np.nanmin(w * h)) if len(objects) and finite else None,
        "max_box_aspect": float(np.nanmax(aspect)) if len(objects) and finite and np.isfinite(aspect).any() else None,
    }


def _layout_ok(cell: dict[str, Any] | None, spec: DatasetSpec, width: int, height: int) -> bool:
    """A dense layout map is there, decodes, has the sample's frame and only labels its kind allows."""
    if not cell or cell.get("bytes") is None:
        return False
    try:
        array = decode_array(cell["bytes"], "layout")
    except DataError:
        return False
    return array.shape == (height, width) and layout_problem(array, spec) is None


def _row_stats(
    row: dict[str, Any], spec: DatasetSpec, shard: str, index: int, cfg: ImageGateConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray | None]:
    width, height = int(row["width"]), int(row["height"])
    stats: dict[str, Any] = {
        "id": row["id"],
        "split": row["split"],
        "shard": shard,
        "row": index,
        "width": width,
        "height": height,
    }
    hists: dict[str, np.ndarray] = {}
    decoded: dict[str, np.ndarray] = {}
    content = hashlib.sha1()
    objects = row.get("objects") or []
    for modality in spec.modalities:
        cell = row.get(modality.name)
        image_stats, hist, pixels, values = _image_stats(
            modality.name,
            cell["bytes"] if cell else None,
            modality.pil_mode,
            modality.max_value,
            width,
            height,
            objects,
        )
        stats.update(image_stats)
        content.update(pixels)
        if hist is not None:
            hists[modality.name] = hist
        if values is not None:
            decoded[modality.name] = values
    stats["content_hash"] = content.hexdigest()
    if spec.layout_kind is not None:
        stats["layout_ok"] = _layout_ok(row.get("layout"), spec, width, height)
    stats.update(_box_stats(objects, width, height, spec.classes))
    stats["duplicate_boxes"] = consistency.duplicate_boxes(objects, cfg.duplicate_box_iou)
    cross, print_ = _cross_modal(spec, decoded, objects, width, height, cfg)
    stats.update(cross)
    return stats, hists, print_


def reference_modality(spec: DatasetSpec) -> str:
    """What the others are registered against: the colour camera (boxes are drawn on it), else the first."""
    return next((m.name for m in spec.modalities if m.channels == 3), spec.modality_names[0])


def registration_pairs(spec: DatasetSpec) -> list[tuple[str, str]]:
    """Every modality against the reference, and the other modalities against each other: a depth map's edges
    may match RGB's poorly (range cutoffs, textures) but thermal's silhouettes well."""
    reference = reference_modality(spec)
    others = [n for n in spec.modality_names if n != reference]
    return [(reference, n) for n in others] + [(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]


def registration_column(spec: DatasetSpec, a: str, b: str) -> str:
    return f"{b}_misregistration_px" if a == reference_modality(spec) else f"{a}_{b}_misregistration_px"


def _cross_modal(
    spec: DatasetSpec,
    decoded: dict[str, np.ndarray],
    objects: list[dict[str, Any]],
    width: int,
    height: int,
    cfg: ImageGateConfig,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Registration, mirror, duplicated-modality, colour-order and box-content statistics of one sample."""
    names = spec.modality_names
    reference = reference_modality(spec)
    out: dict[str, Any] = {}
    for a, b in registration_pairs(spec):
        out[registration_column(spec, a, b)] = math.nan
        out[registration_column(spec, a, b) + "_peak"] = None
        if a == reference:
            out[f"{b}_mirror_gain"] = math.nan
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"{a}_{b}_rank_corr"] = math.nan
    for m in spec.modalities:
        if m.channels == 3:
            out[f"{m.name}_red_minus_blue"] = math.nan
    for m in spec.modalities:
        if m.channels == 1:
            out[f"{m.name}_box_signed"] = math.nan
    factor = consistency.work_factor(height, width)
    thumbs = {n: consistency.shrink(consistency.grey(v), factor) for n, v in decoded.items()}
    registered: dict[tuple[str, str], dict[str, Any]] = {}
    for a, b in registration_pairs(spec):  # reference pairs come first
        if a in thumbs and b in thumbs:
            found = consistency.registration(thumbs[a], thumbs[b], factor, cfg.min_registration_gain)
            registered[a, b] = found
            shift = found["misregistration_px"]
            if a != reference and shift and (reference, a) in registered and (reference, b) in registered:
                implied = consistency.through_reference(registered[reference, a], registered[reference, b])
                shift = shift if implied is None else implied
            out[registration_column(spec, a, b)] = shift
            out[registration_column(spec, a, b) + "_peak"] = (found["peak_dy"], found["peak_dx"])
            if a == reference:
                out[f"{b}_mirror_gain"] = found["mirror_gain"]
    small = {n: consistency.shrink(t, max(1, math.ceil(max(t.shape) / 64))) for n, t in thumbs.items()}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a in small and b in small:
                out[f"{a}_{b}_rank_corr"] = consistency.rank_correlation(small[a], small[b])
    for m in spec.modalities:
        if m.channels == 3 and m.name in decoded:
            values = decoded[m.name]
            out[f"{m.name}_red_minus_blue"] = float(values[..., 0].mean() - values[..., 2].mean())
            out[f"{m.name}_colour_print"] = consistency.colour_print(values)
    if objects:
        for m in spec.modalities:
            if m.channels == 1 and m.name in decoded:
                out[f"{m.name}_box_signed"] = consistency.box_contrast_signed(decoded[m.name], objects)
    print_ = consistency.fingerprint(thumbs[reference]) if reference in thumbs else None
    return out, print_


def _rows(shard_set: ShardSet, columns: list[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for record in shard_set.manifest.shards:
        try:
            parquet = shard_set.open_shard(record)
        except ShardError:
            continue  # unreadable: the shard table reports it, the sample table has no rows to add
        index = 0
        for batch in parquet.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                yield record.path, index, row
                index += 1


def split_named_by(sample_id: str, split: str, splits: list[str] | tuple[str, ...]) -> str | None:
    """Another split of the set that a word of the id names ('demo-test-00003' in train), or None.

    Only ids that carry their split say anything here: LLVIP's numbers or KAIST's set/video/frame names do not,
    so a row moved between splits of such a set cannot be told from a genuine one."""
    words = set(re.split(r"[^a-z0-9]+", sample_id.lower()))
    if split.lower() in words:
        return None
    return next((s for s in splits if s != split and s.lower() in words), None)


def sample_table(
    shard_set: ShardSet,
    cfg: ImageGateConfig,
    *,
    workers: int = 0,
    reference: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row of statistics per sample, and the reference statistics it was judged against.

    ``reference`` (the real data's, from the ingest report) holds the histogram per grey modality and the
    colour balance; without it this set's own medians are used, so one odd sample among many stands out.
    """
    spec = shard_set.spec
    reference = reference or {}
    columns = ["id", "split", "width", "height", *spec.modality_names, "objects"]
    columns += ["layout"] if spec.layout_kind is not None else []
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        results = list(
            pool.map(lambda item: _row_stats(item[2], spec, item[0], item[1], cfg), _rows(shard_set, columns))
        )
    finally:
        pool.shutdown()
    table = pd.DataFrame([r[0] for r in results])
    if len(table):
        table["id_names_split"] = [
            split_named_by(i, own, shard_set.manifest.splits)
            for i, own in zip(table["id"], table["split"], strict=True)
        ]
    chosen: dict[str, Any] = {"histograms": {}, "colour": {}, "box_contrast": {}, "registration": {}}
    # peaks within one work-resolution pixel agree; the coarsest frame of the set sets that pixel
    step = max(
        (consistency.work_factor(h, w) for h, w in zip(table.get("height", []), table.get("width", []), strict=True)),
        default=1,
    )
    for a, b in registration_pairs(spec):
        column = registration_column(spec, a, b)
        peaks = [p for p in table.get(column + "_peak", pd.Series(dtype=object)) if p is not None]
        mode, agreement = consistency.pair_agreement(peaks, tolerance=float(step))
        judged = agreement >= cfg.min_registration_agreement
        chosen["registration"][f"{a}-{b}"] = {
            "common_peak_px": [round(v, 3) for v in mode],
            "agreement": round(agreement, 4),
            "judged": judged,
        }
        if not judged:
            table[column] = math.nan  # this pair's edges do not correspond in this data: no verdict either way
        table = table.drop(columns=[column + "_peak"], errors="ignore")
    for name in [m.name for m in spec.modalities if m.channels == 1]:
        stacked = [r[1][name] for r in results if name in r[1]]
        given = reference.get("histograms", {})
        if name in given:
            ref = np.asarray(given[name], dtype=np.float64)
        elif stacked:
            ref = np.median(np.stack(stacked), axis=0)
            ref = ref / ref.sum() if ref.sum() else ref
        else:
            continue
        chosen["histograms"][name] = [round(float(v), 8) for v in ref]
        table[f"{name}_hist_distance"] = [w1_distance(r[1][name], ref) if name in r[1] else math.nan for r in results]
    for m in spec.modalities:
        column = f"{m.name}_red_minus_blue"
        if m.channels != 3 or column not in table or not table[column].notna().any():
            continue
        values = table[column].to_numpy(dtype=np.float64)
        given = reference.get("colour", {}).get(m.name)
        low = float(given["q05"]) if given else float(np.nanquantile(values, 0.05))
        high = float(given["q95"]) if given else float(np.nanquantile(values, 0.95))
        chosen["colour"][m.name] = {"q05": round(low, 6), "q95": round(high, 6)}
        width = max(high - low, cfg.min_colour_range)
        table[f"{m.name}_colour_outlier"] = np.maximum(0.0, np.maximum(low - values, values - high)) / width
    for m in spec.modalities:
        column = f"{m.name}_colour_print"
        if column not in table:
            continue
        valid = table[column].map(lambda v: isinstance(v, np.ndarray)).to_numpy(dtype=bool)
        scores = np.full(len(table), np.nan)
        if valid.any():
            scores[valid] = consistency.channel_swap_scores(np.stack(table.loc[valid, column].to_list()))
        table[f"{m.name}_channel_swap"] = scores
        table = table.drop(columns=[column])
    for m in spec.modalities:
        column = f"{m.name}_box_signed"
        if column not in table or not table[column].notna().any():
            continue
        given = reference.get("box_contrast", {}).get(m.name)
        values = table[column].to_numpy(dtype=np.float64)
        centre = float(given["median"]) if given else float(np.nanmedian(values))
        spread = float(given["spread"]) if given else float(1.4826 * np.nanmedian(np.abs(values - centre)))
        chosen["box_contrast"][m.name] = {"median": round(centre, 6), "spread": round(spread, 6)}
    signed = {
        c.removesuffix("_box_signed"): table[c].to_numpy(dtype=np.float64)
        for c in table.columns
        if c.endswith("_box_signed")
    }
    table["box_content"] = consistency.box_content(
        signed, chosen["box_contrast"], cfg.min_box_sign_reliability, rows=len(table)
    )
    if len(table):
        prints = [r[2] for r in results]
        usable = [i for i, p in enumerate(prints) if p is not None]
        twins: list[str | None] = [None] * len(table)
        if usable:
            found = consistency.cross_split_twins(
                [table["id"].iloc[i] for i in usable],
                [table["split"].iloc[i] for i in usable],
                np.stack([prints[i] for i in usable]),
                cfg.max_cross_split_similarity,
            )
            for i, twin in zip(usable, found, strict=True):
                twins[i] = twin
        table["cross_split_twin"] = twins
    return table, chosen


CAPTION_COLUMNS = [
    "id",
    "caption_present",
    "caption_blank",
    "caption_tokens",
    "caption_source",
    "tokens_per_word",
    "layout_conflicts",
    "conflict",
]


def caption_table(shard_set: ShardSet, count_tokens: Callable[[str], int]) -> pd.DataFrame:
    """One row per sample from the caption and layout columns alone: no image is decoded for the captions gate.

    ``layout_conflicts`` counts what the caption claims against the boxes (a class the layout lacks, a count
    or side that disagrees: refine's own rules), so a caption of another sample or a wrong count is caught;
    ``tokens_per_word`` is high for garbage text, which the tokenizer splits into many pieces per word.
    """
    from diffx.caption.rules import check_classes, check_counts, check_foreign_objects, check_sides
    from diffx.data.sample import BoxObject

    classes = shard_set.spec.classes
    specials = count_tokens("")
    rows = []
    for _, _, row in _rows(shard_set, ["id", "caption", "caption_source", "objects", "width"]):
        caption = row["caption"]
        objects = [
            BoxObject(tuple(o["bbox"]), o["category"], int(o["category_id"]))  # type: ignore[arg-type]
            for o in row["objects"] or []
        ]
        conflicts: list[str] = []
        words = 0
        if caption and caption.strip():
            conflicts = [f for f in check_classes(caption, objects, classes) if f.startswith("mentions")]
            conflicts += check_counts(caption, objects, classes) + check_sides(caption, objects, classes, row["width"])
            conflicts += check_foreign_objects(caption, classes)
            words = len(re.findall(r"[A-Za-z]+", caption))
        tokens = count_tokens(caption) if caption else None
        rows.append(
            {
                "id": row["id"],
                "caption_present": caption is not None,
                "caption_blank": caption is not None and not caption.strip(),
                "caption_tokens": tokens,
                "caption_source": row["caption_source"],
                "tokens_per_word": (tokens - specials) / words if tokens is not None and words else None,
                "layout_conflicts": len(conflicts),
                "conflict": conflicts[0] if conflicts else None,
            }
        )
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS)


def review_table(queue: list[Any], rows: int) -> pd.DataFrame:
    """One row: how many captions refine flagged that no human decision has resolved yet."""
    return pd.DataFrame([{"pending": len(queue), "rows": rows, "pending_share": len(queue) / rows if rows else 0.0}])


def shard_table(shard_set: ShardSet) -> pd.DataFrame:
    """One row per manifest entry: is the file there, the right size, the same bytes, rows and schema?

    Reuses the verification the sample table's reading already did (one read and hash per shard)."""
    order = ("exists", "bytes", "sha256", "parquet", "rows", "schema")
    rows = []
    for record in shard_set.manifest.shards:
        check = shard_set.check(record)
        failed = order.index(check.failed) if check.failed else len(order)

        def verdict(step: str, failed: int = failed) -> bool | None:
            """True passed, False failed, None not reached (an earlier check failed): only the cause shows."""
            index = order.index(step)
            return None if index > failed else index != failed

        rows.append(
            {
                "shard": record.path,
                "exists": verdict("exists"),
                "bytes_ok": verdict("bytes"),
                "sha256_ok": verdict("sha256"),
                "rows_manifest": record.rows,
                "rows_actual": check.rows if check.rows >= 0 else None,
                "schema_ok": verdict("schema"),
            }
        )
    return pd.DataFrame(
        rows, columns=["shard", "exists", "bytes_ok", "sha256_ok", "rows_manifest", "rows_actual", "schema_ok"]
    )

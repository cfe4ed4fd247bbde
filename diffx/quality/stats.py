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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from diffx import fsio
from diffx.data.images import pil_to_array
from diffx.data.spec import DatasetSpec
from diffx.errors import ShardError
from diffx.shards.reader import ShardSet
from diffx.shards.schema import build_schema
from diffx.shards.writer import schema_matches

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
) -> tuple[dict[str, Any], np.ndarray | None, bytes]:
    """Stats of one modality image; ``decodable`` False (and NaN stats) when the bytes do not decode."""
    out: dict[str, Any] = {
        f"{name}_decodable": False,
        f"{name}_size_ok": False,
        f"{name}_mode_ok": False,
        f"{name}_mean": math.nan,
        f"{name}_std": math.nan,
        f"{name}_min": math.nan,
        f"{name}_max": math.nan,
        f"{name}_nonzero": math.nan,
    }
    if data is None:
        return out, None, b""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            array = pil_to_array(image, name)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return out, None, b""
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
        }
    )
    grey = values if values.ndim == 2 else None
    if grey is not None and objects and array.shape[:2] == (height, width):
        out[f"{name}_box_contrast"] = box_contrast(grey, objects)
    return out, (histogram(grey) if grey is not None else None), np.ascontiguousarray(array).tobytes()


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


def _row_stats(
    row: dict[str, Any], spec: DatasetSpec, shard: str, index: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
    content = hashlib.sha1()
    for modality in spec.modalities:
        cell = row.get(modality.name)
        image_stats, hist, pixels = _image_stats(
            modality.name,
            cell["bytes"] if cell else None,
            modality.pil_mode,
            modality.max_value,
            width,
            height,
            row.get("objects") or [],
        )
        stats.update(image_stats)
        content.update(pixels)
        if hist is not None:
            hists[modality.name] = hist
    stats["content_hash"] = content.hexdigest()
    stats.update(_box_stats(row.get("objects") or [], width, height, spec.classes))
    return stats, hists


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


def sample_table(
    shard_set: ShardSet,
    *,
    workers: int = 0,
    reference: dict[str, list[float]] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """One row of statistics per sample, and the reference histogram per grey modality.

    ``reference`` (from the real data) is what histogram distances are measured against; without it the
    per-bin median of this set is used, so one odd sample among many stands out.
    """
    spec = shard_set.spec
    columns = ["id", "split", "width", "height", *spec.modality_names, "objects"]
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        results = list(pool.map(lambda item: _row_stats(item[2], spec, item[0], item[1]), _rows(shard_set, columns)))
    finally:
        pool.shutdown()
    table = pd.DataFrame([r[0] for r in results])
    grey = [m.name for m in spec.modalities if m.channels == 1]
    chosen: dict[str, list[float]] = {}
    for name in grey:
        stacked = [r[1][name] for r in results if name in r[1]]
        if reference and name in reference:
            ref = np.asarray(reference[name], dtype=np.float64)
        elif stacked:
            ref = np.median(np.stack(stacked), axis=0)
            ref = ref / ref.sum() if ref.sum() else ref
        else:
            continue
        chosen[name] = [round(float(v), 8) for v in ref]
        table[f"{name}_hist_distance"] = [w1_distance(r[1][name], ref) if name in r[1] else math.nan for r in results]
    return table, chosen


def caption_table(shard_set: ShardSet, count_tokens: Callable[[str], int]) -> pd.DataFrame:
    """One row per sample from the caption columns alone: no image is decoded for the captions gate."""
    rows = []
    for _, _, row in _rows(shard_set, ["id", "caption", "caption_source"]):
        caption = row["caption"]
        rows.append(
            {
                "id": row["id"],
                "caption_present": caption is not None,
                "caption_blank": caption is not None and not caption.strip(),
                "caption_tokens": count_tokens(caption) if caption else None,
                "caption_source": row["caption_source"],
            }
        )
    return pd.DataFrame(rows, columns=["id", "caption_present", "caption_blank", "caption_tokens", "caption_source"])


def shard_table(shard_set: ShardSet) -> pd.DataFrame:
    """One row per manifest entry: is the file there, the right size, the same bytes, rows and schema?"""
    expected_schema = build_schema(shard_set.spec, generated=shard_set.manifest.generated)
    rows = []
    for record in shard_set.manifest.shards:
        path = shard_set.shard_path(record)
        row: dict[str, Any] = {
            "shard": record.path,
            "exists": shard_set.fs.exists(path),
            "bytes_ok": False,
            "sha256_ok": False,
            "rows_manifest": record.rows,
            "rows_actual": -1,
            "schema_ok": False,
        }
        if row["exists"]:
            row["bytes_ok"] = shard_set.fs.size(path) == record.bytes
            row["sha256_ok"] = fsio.sha256_file(shard_set.fs, path) == record.sha256
            try:
                parquet = pq.ParquetFile(shard_set.fs.open(path, "rb"))
                row["rows_actual"] = parquet.metadata.num_rows
                row["schema_ok"] = schema_matches(parquet.schema_arrow, expected_schema)
            except (OSError, pa.ArrowException):
                pass
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["shard", "exists", "bytes_ok", "sha256_ok", "rows_manifest", "rows_actual", "schema_ok"]
    )

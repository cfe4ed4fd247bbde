"""The captions table the caption stage writes and refine reads: one row per sample, no images.

A small Parquet file (id, split, caption, caption_source, key) rather than a copy of every image: refine joins
it back onto the shards once, after the rules and the human decisions.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.errors import DataError

CAPTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("key", pa.string()),
    ]
)


def read_captions(path: str) -> dict[str, dict[str, Any]]:
    """id -> {caption, caption_source, split, key}; errors name the file."""
    fs, local = fsio.get_fs(path)
    if not fs.exists(local):
        raise DataError(path, "captions table not found; run the caption stage first")
    try:
        with fs.open(local, "rb") as handle:
            table = pq.read_table(handle)
    except (OSError, pa.ArrowException) as err:
        raise DataError(path, f"not a readable Parquet captions table, truncated or corrupt? ({err})") from None
    missing = set(CAPTION_SCHEMA.names) - set(table.column_names)
    if missing:
        raise DataError(path, f"captions table lacks columns {sorted(missing)}")
    return {row["id"]: row for row in table.to_pylist()}

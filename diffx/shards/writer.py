"""Writing shards: one Parquet file per (split, index), atomically, with its checksum and stats.

Follows img2dataset's writer role: it knows nothing about where samples come from. Row groups are cut
by bytes (not rows) so streaming readers get tens-of-MB reads whatever the image size.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.data.sample import Sample
from diffx.data.spec import DatasetSpec
from diffx.shards.manifest import (
    RECORD_PREFIXES,
    ShardRecord,
    new_manifest,
    record_relpath,
    shard_relpath,
    write_manifest,
)
from diffx.shards.schema import build_schema, diffx_metadata, sample_to_row

log = logging.getLogger(__name__)

SMALL_COLUMNS = ("id", "split", "width", "height", "caption_source", "sampler", "model_id", "seed", "steps")


class ShardSetWriter:
    """Writes the shards of one shard set under ``root`` and, last of all, its manifest."""

    def __init__(
        self,
        root: str,
        spec: DatasetSpec,
        *,
        generated: bool = False,
        params_hash: str = "",
        row_group_bytes: int = 32 << 20,
        compression: str = "none",
        storage_options: dict[str, Any] | None = None,
    ):
        self.root = str(root).rstrip("/")
        self.spec = spec
        self.generated = generated
        self.params_hash = params_hash
        self.row_group_bytes = row_group_bytes
        self.compression = compression
        self.storage_options = storage_options or {}
        self.schema = build_schema(spec, generated=generated, params_hash=params_hash)
        self.fs, self.root_path = fsio.get_fs(self.root, **self.storage_options)
        names = set(self.schema.names)
        self._stat_columns = [c for c in SMALL_COLUMNS if c in names]
        self._dict_columns = [c for c in ("split", "caption_source", "sampler", "model_id") if c in names]

    # ------------------------------------------------------------------ single shard
    def write_shard(
        self, split: str, index: int, samples: Iterable[Sample], plan_key: str | None = None
    ) -> ShardRecord:
        """Write one shard atomically and its sidecar record; returns the record."""
        rel = shard_relpath(split, index)
        path = f"{self.root_path}/{rel}"
        started = time.perf_counter()
        rows = 0
        class_counts: Counter[str] = Counter()
        image_bytes: Counter[str] = Counter()
        buffer: list[dict[str, Any]] = []
        buffered = 0
        with fsio.atomic_open(self.fs, path, "wb") as raw:
            sink = fsio.HashingWriter(raw)
            writer = pq.ParquetWriter(
                sink,
                self.schema,
                compression=self.compression,
                use_dictionary=self._dict_columns,
                write_statistics=self._stat_columns,
            )
            try:
                for sample in samples:
                    if sample.split != split:
                        raise ValueError(f"sample {sample.id!r} has split {sample.split!r}, shard is {split!r}")
                    buffer.append(sample_to_row(sample, self.spec, self.generated))
                    size = sum(len(img.data) for img in sample.images.values())
                    buffered += size
                    for name, img in sample.images.items():
                        image_bytes[name] += len(img.data)
                    class_counts.update(o.category for o in sample.objects)
                    rows += 1
                    if buffered >= self.row_group_bytes:
                        self._flush(writer, buffer)
                        buffer, buffered = [], 0
                if buffer or rows == 0:
                    self._flush(writer, buffer)
            finally:
                writer.close()
            digest, nbytes = sink.hexdigest(), sink.bytes_written
        stats = {
            "objects": sum(class_counts.values()),
            "class_counts": dict(sorted(class_counts.items())),
            "image_bytes": dict(sorted(image_bytes.items())),
        }
        log.debug("wrote %s: %d rows, %d bytes in %.3fs", rel, rows, nbytes, time.perf_counter() - started)
        record = ShardRecord(rel, split, index, rows, nbytes, digest, plan_key=plan_key, stats=stats)
        fsio.write_json_atomic(
            fsio.join(self.root, record_relpath(split, index)), asdict(record), **self.storage_options
        )
        return record

    def _flush(self, writer: pq.ParquetWriter, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        writer.write_table(table, row_group_size=max(len(rows), 1))

    # ------------------------------------------------------------------ resume support
    def completed_record(self, split: str, index: int) -> ShardRecord | None:
        """The sidecar record of a shard whose file is present with the recorded size, else None."""
        url = fsio.join(self.root, record_relpath(split, index))
        if not self.fs.exists(fsio.get_fs(url, **self.storage_options)[1]):
            return None
        record = ShardRecord.from_dict(fsio.read_json(url, **self.storage_options), url)
        shard_path = f"{self.root_path}/{record.path}"
        if not self.fs.exists(shard_path) or self.fs.size(shard_path) != record.bytes:
            return None
        return record

    # ------------------------------------------------------------------ whole set
    def write_split(self, split: str, samples: Iterable[Sample], rows_per_shard: int) -> list[ShardRecord]:
        """Cut a stream into shards of ``rows_per_shard`` rows (an empty split gives no shard)."""
        records: list[ShardRecord] = []
        chunk: list[Sample] = []
        for sample in samples:
            chunk.append(sample)
            if len(chunk) == rows_per_shard:
                records.append(self.write_shard(split, len(records), chunk))
                chunk = []
        if chunk:
            records.append(self.write_shard(split, len(records), chunk))
        return records

    def finalize(self, records: list[ShardRecord]) -> None:
        write_manifest(
            self.root,
            new_manifest(self.spec, records, generated=self.generated, params_hash=self.params_hash),
            **self.storage_options,
        )

    def clear(self) -> None:
        """Remove a previous set under root, manifest first, so a crash mid-way never looks complete."""
        manifest = f"{self.root_path}/_manifest.json"
        if self.fs.exists(manifest):
            self.fs.rm(manifest)
        if self.fs.exists(self.root_path):
            for entry in self.fs.find(self.root_path):
                name = entry.rsplit("/", 1)[-1]
                if (
                    name.endswith(".parquet")
                    or (name.startswith(RECORD_PREFIXES) and name.endswith(".json"))
                    or ".tmp-" in name
                ):
                    self.fs.rm(entry)


def schema_matches(schema: pa.Schema, expected: pa.Schema) -> bool:
    """Field-level equality plus equal dataset descriptions (producer details may differ)."""
    if not schema.remove_metadata().equals(expected.remove_metadata()):
        return False
    mine, theirs = diffx_metadata(schema), diffx_metadata(expected)
    return mine["dataset"] == theirs["dataset"] and mine["generated"] == theirs["generated"]

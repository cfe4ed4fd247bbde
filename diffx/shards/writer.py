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
from diffx.errors import ShardError
from diffx.shards.manifest import (
    ShardRecord,
    new_manifest,
    record_relpath,
    shard_relpath,
    write_manifest,
)
from diffx.shards.schema import build_schema, sample_to_row

log = logging.getLogger(__name__)

SMALL_COLUMNS = ("id", "split", "width", "height", "caption_source", "sampler", "model_id", "seed", "steps")


# A shuffled reader fetches a whole row group for one row: groups of about one large frame (a 1280 x 1024 pair is
# ~3 MB) make an item cost close to its own bytes, and the demo's 60 kB rows still share a group by the dozen.
ROW_GROUP_BYTES = 1 << 20


class ShardSetWriter:
    """Writes the shards of one shard set under ``root`` and, last of all, its manifest."""

    def __init__(
        self,
        root: str,
        spec: DatasetSpec,
        *,
        generated: bool = False,
        params_hash: str = "",
        row_group_bytes: int = ROW_GROUP_BYTES,
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
        self._trusted: dict[tuple[str, int], str] = {}  # (split, index) -> sha256 this writer wrote or verified

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
                    size = sum(len(img.data) for img in sample.images.values())
                    if buffer and buffered + size > self.row_group_bytes:  # a group never grows past the target
                        self._flush(writer, buffer)
                        buffer, buffered = [], 0
                    buffer.append(sample_to_row(sample, self.spec, self.generated))
                    buffered += size
                    for name, img in sample.images.items():
                        image_bytes[name] += len(img.data)
                    class_counts.update(o.category for o in sample.objects)
                    rows += 1
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
        self._trusted[(split, index)] = digest
        fsio.write_json_atomic(
            fsio.join(self.root, record_relpath(split, index)), asdict(record), **self.storage_options
        )
        return record

    def _flush(self, writer: pq.ParquetWriter, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        writer.write_table(table, row_group_size=max(len(rows), 1))

    # ------------------------------------------------------------------ resume support
    def completed_record(self, split: str, index: int) -> ShardRecord | None:
        """The sidecar record of a shard whose bytes match it (size and sha256), else None.

        Content, not size: a shard altered in place must be rewritten on resume, not skipped as complete.
        A shard is hashed once per writer (this process wrote it or already checked it)."""
        url = fsio.join(self.root, record_relpath(split, index))
        if not self.fs.exists(fsio.get_fs(url, **self.storage_options)[1]):
            return None
        try:
            record = ShardRecord.from_dict(fsio.read_json(url, **self.storage_options), url)
        except (ValueError, ShardError):  # a sidecar cut short or garbled: the shard is redone
            return None
        if self._trusted.get((split, index)) == record.sha256:
            return record
        shard_path = f"{self.root_path}/{record.path}"
        if not self.fs.exists(shard_path) or self.fs.size(shard_path) != record.bytes:
            return None
        if fsio.sha256_file(self.fs, shard_path) != record.sha256:
            log.warning("%s: content differs from its record; it will be rewritten", shard_path)
            return None
        self._trusted[(split, index)] = record.sha256
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

"""Reading shard sets: rows as Samples (for stages) or as Arrow (for analytics and consumers).

Every shard is checked against its manifest record (size, sha256, row count, schema) the first time a
process opens it, from the same bytes that are then parsed: one read, hashed as it arrives, so tampered or
truncated data stops the stage that reads it, named by shard, instead of flowing into the next set.

A shard verified once is stamped in a node-local cache (``$DIFFX_VERIFIED_CACHE``, default
``~/.cache/diffx/verified``; empty = off) under a key of its manifest digest and the file's properties (size,
mtime, inode locally; ETag on an object store): the DataLoader workers of a node, and later runs, then check its
footer (rows, schema) instead of reading 30 GB again each. A file that changes gets another key; a file written
in the last seconds is never stamped, as git treats racily clean files, so a same-size rewrite within the
clock's granularity is still hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from diffx import fsio
from diffx.data.sample import Sample
from diffx.errors import ShardError
from diffx.shards.manifest import Manifest, ShardRecord, read_manifest
from diffx.shards.schema import build_schema, row_to_sample, schema_matches


@dataclass(frozen=True)
class ShardCheck:
    """How a shard compared with its manifest record: ``failed`` names the first check that failed."""

    failed: str | None  # exists | bytes | sha256 | parquet | rows | schema, or None when verified
    problem: str | None
    rows: int = -1


VERIFIED_CACHE_ENV = "DIFFX_VERIFIED_CACHE"
RACY_SECONDS = 3.0  # a file younger than this is not stamped: its mtime may not move on a same-size rewrite


def verified_cache() -> Path | None:
    """The node-local folder of verification stamps, or None when switched off (``DIFFX_VERIFIED_CACHE=``)."""
    value = os.environ.get(VERIFIED_CACHE_ENV)
    if value is not None:
        return Path(value) if value else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffx" / "verified"


class ShardSet:
    """A complete shard set (it has a manifest). Cheap to create: nothing is read beyond the manifest."""

    def __init__(self, root: str, **storage_options: Any):
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options
        self.manifest: Manifest = read_manifest(self.root, **storage_options)
        self.spec = self.manifest.spec
        self.fs, self.root_path = fsio.get_fs(self.root, **storage_options)
        self.checked: dict[str, ShardCheck] = {}  # shard path -> how its first opening went
        self._schema: pa.Schema | None = None

    def __len__(self) -> int:
        return self.manifest.total_rows()

    def shard_path(self, record: ShardRecord) -> str:
        return f"{self.root_path}/{record.path}"

    def open_shard(self, record: ShardRecord, *, in_memory: bool = True) -> pq.ParquetFile:
        """The shard's Parquet file; its first opening in this process verifies it against the manifest.

        A hashing first opening parses the bytes it hashed (``in_memory``: what a stage reading the whole shard
        wants); ``in_memory=False`` returns a file-backed handle instead, for readers that keep it open."""
        path = self.shard_path(record)
        check = self.checked.get(record.path)
        parquet = None
        if check is None:
            stamp = self._stamp(record, path)
            check, parquet = self._footer_checked(record, path) if stamp and stamp.exists() else (None, None)
            if check is None:  # not stamped, or its footer disagrees: hash it (the full check names what differs)
                check, parquet = self._verified(record, path, keep=in_memory)
                if check.problem is None and stamp is not None:
                    self._write_stamp(stamp, path)
            self.checked[record.path] = check
        if check.problem is not None:
            raise ShardError(f"{fsio.join(self.root, record.path)}: {check.problem}")
        if parquet is not None:
            return parquet
        try:
            return self._file(path)
        except (OSError, pa.ArrowException) as err:
            raise ShardError(f"{fsio.join(self.root, record.path)}: unreadable Parquet ({err})") from None

    def reopen(self, record: ShardRecord, metadata: pq.FileMetaData) -> pq.ParquetFile:
        """Another handle on a shard this process has opened, its footer taken from ``metadata`` rather than read
        again (a thread of its own reads through it)."""
        if record.path not in self.checked:
            raise ShardError(f"{fsio.join(self.root, record.path)}: reopened before it was opened and verified")
        return self._file(self.shard_path(record), metadata)

    def _file(self, path: str, metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
        """A file-backed handle for random row-group reads. Pre-buffered: a row group's column chunks arrive as one
        coalesced range (one GET on an object store, not one per column); on an object store the file object
        caches nothing itself, since fsspec's read-ahead block would fetch megabytes past a row group that a
        shuffled reader does not want next."""
        handle = self.fs.open(path, "rb") if fsio.is_local(self.fs) else self.fs.open(path, "rb", cache_type="none")
        return pq.ParquetFile(handle, pre_buffer=True, metadata=metadata)

    def check(self, record: ShardRecord) -> ShardCheck:
        """Verify one shard (once per process) without raising: the gates tabulate every shard's outcome."""
        with contextlib.suppress(ShardError):
            self.open_shard(record)
        return self.checked[record.path]

    def _stamp(self, record: ShardRecord, path: str) -> Path | None:
        folder = verified_cache()
        if folder is None:
            return None
        try:
            key = self.fs.ukey(path)  # the file's properties: size, mtime, inode (local); ETag (object stores)
        except (OSError, ValueError, NotImplementedError):
            return None
        text = f"{self.fs.protocol}|{path}|{key}|{record.bytes}|{record.sha256}"
        return folder / hashlib.sha256(text.encode()).hexdigest()[:40]

    def _write_stamp(self, stamp: Path, path: str) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            modified = self.fs.info(path).get("mtime") or self.fs.modified(path).timestamp()
            if time.time() - float(modified) < RACY_SECONDS:
                return
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()

    def _footer_checked(self, record: ShardRecord, path: str) -> tuple[ShardCheck | None, pq.ParquetFile | None]:
        """A stamped shard: only what the footer says (rows, schema); None when it cannot even be opened."""
        try:
            parquet = self._file(path)
        except (OSError, ValueError, pa.ArrowException):
            return None, None
        rows = parquet.metadata.num_rows
        if rows != record.rows or not schema_matches(parquet.schema_arrow, self.expected_schema()):
            return None, None  # hash it: the full check names what differs
        return ShardCheck(None, None, rows), parquet

    def _verified(self, record: ShardRecord, path: str, *, keep: bool) -> tuple[ShardCheck, pq.ParquetFile | None]:
        """Read the whole shard once, hashing as it arrives. ``keep``: parse the same bytes (no second read);
        else keep none of them and return a file-backed handle, so a reader's first opening of a shard costs a few
        MB of memory, not the shard's size (a 500-row shard of 1280 x 1024 frames is 3 GB)."""
        try:
            data, sha256, size = fsio.read_hashed(self.fs, path, keep=keep)
        except FileNotFoundError:
            return ShardCheck("exists", f"missing (the manifest lists {record.rows} rows)"), None
        except (OSError, ValueError) as err:  # ValueError: fsspec on e.g. a symlink loop
            return ShardCheck("exists", f"unreadable ({err})"), None
        if size != record.bytes:
            return ShardCheck("bytes", f"{size} bytes, the manifest says {record.bytes} (truncated or altered)"), None
        if sha256 != record.sha256:
            problem = (
                f"sha256 {sha256[:16]}... does not match the manifest's {record.sha256[:16]}... "
                "(altered after it was written)"
            )
            return ShardCheck("sha256", problem), None
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data)) if keep else self._file(path)
        except (OSError, pa.ArrowException) as err:
            return ShardCheck("parquet", f"unreadable Parquet ({err})"), None
        rows = parquet.metadata.num_rows
        if rows != record.rows:
            return ShardCheck("rows", f"{rows} rows, the manifest says {record.rows}", rows), None
        if not schema_matches(parquet.schema_arrow, self.expected_schema()):
            problem = "schema differs from the manifest's dataset description (columns or types changed)"
            return ShardCheck("schema", problem, rows), None
        return ShardCheck(None, None, rows), parquet

    def expected_schema(self) -> pa.Schema:
        if self._schema is None:
            self._schema = build_schema(self.spec, generated=self.manifest.generated)
        return self._schema

    def iter_batches(
        self, split: str | None = None, columns: list[str] | None = None, batch_size: int = 64
    ) -> Iterator[pa.RecordBatch]:
        for record in self.manifest.shards_of(split):
            parquet = self.open_shard(record)
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)

    def iter_samples_of(self, record: ShardRecord) -> Iterator[Sample]:
        """The samples of one shard, in order."""
        for batch in self.open_shard(record).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                yield row_to_sample(row, self.spec)

    def iter_samples(self, split: str | None = None) -> Iterator[Sample]:
        for record in self.manifest.shards_of(split):
            yield from self.iter_samples_of(record)

    def read_table(self, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """The rows of a split as one Arrow table, every shard verified (what stages use, not arrow_dataset)."""
        tables = [self.open_shard(r).read(columns=columns) for r in self.manifest.shards_of(split)]
        if not tables:
            return (
                self.expected_schema().empty_table().select(columns)
                if columns
                else self.expected_schema().empty_table()
            )
        return pa.concat_tables(tables)

    def arrow_dataset(self, split: str | None = None) -> pads.Dataset:
        """A pyarrow.dataset over exactly the manifest's files (never stray or temporary ones), for consumers'
        analytics: it reads lazily and does not verify checksums (stages use ``read_table``)."""
        files = [self.shard_path(r) for r in self.manifest.shards_of(split)]
        return pads.dataset(files, format="parquet", filesystem=self.fs)

    def data_files(self, split: str | None = None) -> dict[str, list[str]]:
        """``{split: [shard paths]}`` for ``datasets.load_dataset('parquet', data_files=...)``: a split mapping,
        so ``split="train"`` works and each split stays a split (a plain list would all be called train)."""
        splits = [split] if split is not None else self.manifest.splits
        return {s: [fsio.join(self.root, r.path) for r in self.manifest.shards_of(s)] for s in splits}

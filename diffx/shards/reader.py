"""Reading shard sets: rows as Samples (for stages) or as Arrow (for analytics and consumers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from diffx import fsio
from diffx.data.sample import Sample
from diffx.errors import ShardError
from diffx.shards.manifest import Manifest, ShardRecord, read_manifest
from diffx.shards.schema import row_to_sample


class ShardSet:
    """A complete shard set (it has a manifest). Cheap to create: nothing is read beyond the manifest."""

    def __init__(self, root: str, **storage_options: Any):
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options
        self.manifest: Manifest = read_manifest(self.root, **storage_options)
        self.spec = self.manifest.spec
        self.fs, self.root_path = fsio.get_fs(self.root, **storage_options)

    def __len__(self) -> int:
        return self.manifest.total_rows()

    def shard_path(self, record: ShardRecord) -> str:
        return f"{self.root_path}/{record.path}"

    def open_shard(self, record: ShardRecord) -> pq.ParquetFile:
        path = self.shard_path(record)
        try:
            return pq.ParquetFile(self.fs.open(path, "rb"))
        except (OSError, pa.ArrowException) as err:
            raise ShardError(f"{fsio.join(self.root, record.path)}: unreadable Parquet ({err})") from None

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

    def arrow_dataset(self, split: str | None = None) -> pads.Dataset:
        """A pyarrow.dataset over exactly the manifest's files (never stray or temporary ones)."""
        files = [self.shard_path(r) for r in self.manifest.shards_of(split)]
        return pads.dataset(files, format="parquet", filesystem=self.fs)

    def data_files(self, split: str | None = None) -> dict[str, list[str]]:
        """``{split: [shard paths]}`` for ``datasets.load_dataset('parquet', data_files=...)``: a split mapping,
        so ``split="train"`` works and each split stays a split (a plain list would all be called train)."""
        splits = [split] if split is not None else self.manifest.splits
        return {s: [fsio.join(self.root, r.path) for r in self.manifest.shards_of(s)] for s in splits}

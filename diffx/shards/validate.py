"""Checking a shard set against its manifest: the guard between every pair of stages.

It reports *every* problem (not the first) with the shard path and what was expected, because a
truncated upload usually breaks several shards at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.data.sample import UniqueIds
from diffx.errors import ShardError
from diffx.shards.reader import ShardSet
from diffx.shards.schema import build_schema
from diffx.shards.writer import schema_matches


@dataclass
class ValidationReport:
    root: str
    shards: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "shards": self.shards, "rows": self.rows, "problems": self.problems}


def validate_shard_set(root: str, *, check_ids: bool = True, **storage_options: Any) -> ValidationReport:
    report = ValidationReport(root=str(root))
    try:
        shard_set = ShardSet(root, **storage_options)
    except ShardError as err:
        report.problems.append(str(err))
        return report
    manifest = shard_set.manifest
    expected_schema = build_schema(shard_set.spec, generated=manifest.generated)
    ids = UniqueIds()
    fs = shard_set.fs
    listed = set()
    for record in manifest.shards:
        where = fsio.join(shard_set.root, record.path)
        path = shard_set.shard_path(record)
        listed.add(path)
        report.shards += 1
        if not fs.exists(path):
            report.problems.append(f"{where}: missing (manifest lists {record.rows} rows)")
            continue
        size = fs.size(path)
        if size != record.bytes:
            report.problems.append(
                f"{where}: {size} bytes on disk, manifest says {record.bytes} (truncated or altered)"
            )
            continue
        digest = fsio.sha256_file(fs, path)
        if digest != record.sha256:
            report.problems.append(
                f"{where}: sha256 {digest[:16]}… does not match the manifest's {record.sha256[:16]}…"
            )
            continue
        try:
            parquet = pq.ParquetFile(fs.open(path, "rb"))
        except (OSError, pa.ArrowException) as err:
            report.problems.append(f"{where}: unreadable Parquet ({err})")
            continue
        if parquet.metadata.num_rows != record.rows:
            report.problems.append(f"{where}: {parquet.metadata.num_rows} rows, manifest says {record.rows}")
        if not schema_matches(parquet.schema_arrow, expected_schema):
            report.problems.append(f"{where}: schema differs from the manifest's dataset description")
            continue
        report.rows += parquet.metadata.num_rows
        if check_ids:
            for batch in parquet.iter_batches(columns=["id", "split"], batch_size=65536):
                for sample_id, split in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                    if split != record.split:
                        report.problems.append(
                            f"{where}: row {sample_id!r} has split {split!r}, shard is {record.split!r}"
                        )
                    duplicate = ids.check(sample_id, where)
                    if duplicate:
                        report.problems.append(duplicate)
    on_disk = {p for p in fs.find(shard_set.root_path) if p.endswith(".parquet")}
    for stray in sorted(on_disk - listed):
        name = stray.rsplit("/", 1)[-1]
        if not name.startswith("."):
            report.problems.append(f"{stray}: Parquet file not listed in the manifest")
    return report

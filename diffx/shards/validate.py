"""Checking a shard set against its manifest: the guard between every pair of stages.

It reports *every* problem (not the first) with the shard path and what was expected, because a
truncated upload usually breaks several shards at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffx import fsio
from diffx.data.sample import UniqueIds
from diffx.errors import ShardError
from diffx.shards.reader import ShardSet


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
    ids = UniqueIds()
    fs = shard_set.fs
    listed = set()
    for record in shard_set.manifest.shards:
        where = fsio.join(shard_set.root, record.path)
        listed.add(shard_set.shard_path(record))
        report.shards += 1
        check = shard_set.check(record)
        if check.rows >= 0 and check.failed != "rows":
            report.rows += check.rows
        if check.problem is not None:
            report.problems.append(f"{where}: {check.problem}")
            if check.failed != "rows":
                continue
        if check_ids:
            parquet = shard_set.open_shard(record) if check.failed is None else None
            for batch in parquet.iter_batches(columns=["id", "split"], batch_size=65536) if parquet else ():
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

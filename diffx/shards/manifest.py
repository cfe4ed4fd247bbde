"""The shard-set manifest: which shards make the set complete, and their sizes and checksums.

A shard set is complete only when ``_manifest.json`` exists; it is written last, atomically, from the
per-shard records, so a killed writer never leaves a set that looks finished.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diffx import __version__, fsio
from diffx.data.spec import DatasetSpec
from diffx.errors import ShardError
from diffx.shards.schema import SCHEMA_VERSION

MANIFEST_NAME = "_manifest.json"
FORMAT_NAME = "diffx-shards"


def shard_relpath(split: str, index: int) -> str:
    return f"{split}/part-{index:05d}.parquet"


RECORD_PREFIXES = (".part-", "_part-")  # the sidecar's name, then the name it had before 0.2 (still cleaned up)


def record_relpath(split: str, index: int) -> str:
    """Per-shard sidecar record. Hidden ('.'): pyarrow.dataset and Hugging Face ``datasets`` (``data_dir=``)
    skip it, where a '_' file made ``load_dataset("parquet", data_dir=root)`` read JSON as Parquet."""
    return f"{split}/.part-{index:05d}.json"


@dataclass
class ShardRecord:
    path: str  # relative to the shard-set root
    split: str
    index: int
    rows: int
    bytes: int
    sha256: str
    schema_version: int = SCHEMA_VERSION
    plan_key: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ShardRecord:
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            return cls(**data)
        except TypeError as err:
            raise ShardError(f"{source}: malformed shard record ({err})") from None


@dataclass
class Manifest:
    dataset: dict[str, Any]
    shards: list[ShardRecord]
    generated: bool = False
    producer: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    @property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.model_validate(self.dataset)

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.shards})

    def shards_of(self, split: str | None) -> list[ShardRecord]:
        return [s for s in self.shards if split is None or s.split == split]

    def total_rows(self, split: str | None = None) -> int:
        return sum(s.rows for s in self.shards_of(split))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shards"] = [asdict(s) for s in sorted(self.shards, key=lambda s: (s.split, s.index))]
        out["totals"] = {split: self.total_rows(split) for split in self.splits}
        return out


def new_manifest(spec: DatasetSpec, shards: list[ShardRecord], *, generated: bool, params_hash: str) -> Manifest:
    return Manifest(
        dataset=spec.model_dump(mode="json"),
        shards=sorted(shards, key=lambda s: (s.split, s.index)),
        generated=generated,
        producer={"diffx_version": __version__, "params_hash": params_hash},
    )


def write_manifest(root: str, manifest: Manifest, **storage_options: Any) -> None:
    fsio.write_json_atomic(fsio.join(root, MANIFEST_NAME), manifest.to_dict(), **storage_options)


def read_manifest(root: str, **storage_options: Any) -> Manifest:
    url = fsio.join(root, MANIFEST_NAME)
    fs, path = fsio.get_fs(url, **storage_options)
    if not fs.exists(path):
        raise ShardError(f"{url}: no manifest; the shard set is missing or was never completed")
    try:
        data = fsio.read_json(url, **storage_options)
    except ValueError as err:
        raise ShardError(f"{url}: manifest is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ShardError(f"{url}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT_NAME:
        raise ShardError(f"{url}: format {data.get('format')!r}, expected {FORMAT_NAME!r}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{url}: schema_version {data.get('schema_version')}, this diffx reads {SCHEMA_VERSION}")
    if not isinstance(data.get("dataset"), dict) or not isinstance(data.get("shards"), list):
        raise ShardError(f"{url}: needs a 'dataset' object and a 'shards' list")
    try:
        DatasetSpec.model_validate(data["dataset"])
    except ValueError as err:
        raise ShardError(f"{url}: 'dataset' is not a valid dataset description ({err})") from None
    shards = [ShardRecord.from_dict(s, f"{url} shards[{i}]") for i, s in enumerate(data["shards"])]
    return Manifest(
        dataset=data["dataset"],
        shards=shards,
        generated=bool(data.get("generated", False)),
        producer=data.get("producer", {}),
    )

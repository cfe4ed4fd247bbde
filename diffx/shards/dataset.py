"""A torch ``Dataset`` over a shard set, shaped for detector training.

Each item holds one float tensor per modality (C x H x W, scaled to [0, 1] by the modality's bit
depth), the boxes (N x 4, x_min y_min x_max y_max pixels) and the class ids. Parquet files are opened
lazily per worker process, so the dataset pickles cleanly into DataLoader workers.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from diffx.data.images import decode_array
from diffx.shards.reader import ShardSet


class ShardDataset(Dataset):
    def __init__(
        self,
        root: str,
        split: str | None = None,
        modalities: list[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ):
        self.root = root
        self.split = split
        self.storage_options = storage_options or {}
        shard_set = ShardSet(root, **self.storage_options)
        self.spec = shard_set.spec
        self.modalities = list(modalities or self.spec.modality_names)
        for name in self.modalities:
            self.spec.modality(name)  # raises on an unknown modality name
        self.records = shard_set.manifest.shards_of(split)
        self.starts: list[int] = []
        total = 0
        for record in self.records:
            self.starts.append(total)
            total += record.rows
        self.length = total
        self._columns = ["id", "width", "height", *self.modalities, "objects", "caption"]
        self._shard_set: ShardSet | None = None
        self._cached: tuple[int, int, int, pa.Table] | None = None  # shard, row-group, first row, table
        self._row_groups: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shard_set"] = None
        state["_cached"] = None
        return state

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _row(self, shard: int, row: int) -> dict[str, Any]:
        if self._shard_set is None:
            self._shard_set = ShardSet(self.root, **self.storage_options)
        cached = self._cached
        if cached is not None and cached[0] == shard and cached[2] <= row < cached[2] + cached[3].num_rows:
            return cached[3].slice(row - cached[2], 1).to_pylist()[0]
        parquet = self._shard_set.open_shard(self.records[shard])
        if shard not in self._row_groups:
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            self._row_groups[shard] = list(np.cumsum([0, *sizes[:-1]]))
        group = bisect.bisect_right(self._row_groups[shard], row) - 1
        table = parquet.read_row_group(group, columns=self._columns)
        first = int(self._row_groups[shard][group])
        self._cached = (shard, group, first, table)
        return table.slice(row - first, 1).to_pylist()[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self._row(*self._locate(index))
        images = {}
        for name in self.modalities:
            spec = self.spec.modality(name)
            array = decode_array(row[name]["bytes"], f"{row['id']}:{name}").astype(np.float32) / spec.max_value
            images[name] = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())
        objects = row["objects"]
        boxes = torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([o["category_id"] for o in objects], dtype=torch.int64)
        return {
            "id": row["id"],
            "images": images,
            "boxes": boxes,
            "labels": labels,
            "caption": row.get("caption"),
            "size": (int(row["height"]), int(row["width"])),
        }


def detection_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images per modality (same size within a set); keep per-sample boxes/labels as lists."""
    names = batch[0]["images"].keys()
    return {
        "id": [b["id"] for b in batch],
        "images": {n: torch.stack([b["images"][n] for b in batch]) for n in names},
        "boxes": [b["boxes"] for b in batch],
        "labels": [b["labels"] for b in batch],
        "caption": [b["caption"] for b in batch],
    }

"""A torch ``Dataset`` over a shard set, in the frame a model sees.

Each item holds one float tensor per modality (C x H x W, scaled to [0, 1] by the modality's bit
depth), the boxes (N x 4, x_min y_min x_max y_max pixels) and the class ids, and the dense layout
(1 x H x W, diffx/data/layout_tensors.py) when the set has one, all placed by the set's frame policy
(diffx/data/frame.py): centred by default, at random with a generator (training), or resized only.
Parquet files are opened lazily per worker process, so the dataset pickles cleanly into DataLoader workers.

Over an object store a row group is a request away: ``prefetch`` hands the row groups of items a reader will ask
for next to a background thread (its own file handles), so the requests overlap the decoding of the items before
them; the training loop calls it with the positions its plan puts next (``train.read_ahead``).

Training reads every sample once per epoch, hundreds of epochs on a small set: decoding its PNGs (and
re-reading the row group it sits in, since a shuffled order hops between shards) was a fifth of a demo
detector step. So each process keeps the decoded rows (the stored arrays, before any crop, flip or
scaling) up to ``decode_cache_bytes``; what an item returns is the same with or without the cache.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from diffx import fsio
from diffx.data.frame import place, place_boxes, place_image, resize_only
from diffx.data.images import decode_array
from diffx.data.layout_tensors import stored_to_tensor
from diffx.data.layouts import is_label_map
from diffx.errors import DataError
from diffx.shards.reader import ShardSet

REMOTE_READ_AHEAD_THREADS = 4  # requests in flight to an object store (one per thread); local disk: 1
GROUP_CACHE_BYTES = 64 * 2**20  # per process: the row groups a shuffle window of 1 MiB groups touches
OPEN_FILES = 64  # shards a process keeps open, footers parsed (a 500-row footer is ~0.3 MB); 2 ms to reopen one
DECODE_CACHE_BYTES = 256 * 2**20  # per process: the demo's splits fit many times; a large set caches its first rows


@dataclass(frozen=True)
class DecodedRow:
    """One row as stored, its images decoded: what :meth:`ShardDataset.item` places into the model's frame."""

    id: str
    height: int
    width: int
    arrays: dict[str, np.ndarray]  # modality -> HxW or HxWxC, the stored dtype
    objects: list[dict[str, Any]]
    caption: str | None
    layout: np.ndarray | None  # the stored dense layout map; None when not read or the row has none

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values()) + (self.layout.nbytes if self.layout is not None else 0)


class ShardDataset(Dataset):
    def __init__(
        self,
        root: str,
        split: str | None = None,
        modalities: list[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        *,
        layout: bool | None = None,
        decode_cache_bytes: int = DECODE_CACHE_BYTES,
        group_cache_bytes: int = GROUP_CACHE_BYTES,
    ):
        """``layout``: read the dense layout column (default: when the set has one). ``decode_cache_bytes``:
        decoded rows kept per process (0 = decode on every read); rows past the budget are decoded each time.
        ``group_cache_bytes``: row groups kept as read (the latest one always)."""
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
        self.layout = self.spec.layout_kind is not None if layout is None else layout
        if self.layout and self.spec.layout_kind is None:
            raise DataError(root, "the shard set has no dense layout (its layout_kind is null)")
        self._columns = ["id", "width", "height", *self.modalities, "objects", "caption"]
        if self.layout:
            self._columns.append("layout")
        self._wanted = frozenset(self._columns)
        self._shard_set: ShardSet | None = None
        # the row groups read last, up to group_cache_bytes: a shard-aware order reads a window's rows from a few
        # groups, in shuffled order; the latest group is always kept (a row group larger than the budget)
        self._groups: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._group_bytes = 0
        self.group_cache_bytes = group_cache_bytes
        self._row_groups: dict[int, list[int]] = {}
        self._open: OrderedDict[int, pq.ParquetFile] = OrderedDict()  # the last OPEN_FILES shards, footer parsed
        self.bytes_read = 0  # compressed bytes of the column chunks this process read (row groups, per item)
        self.bytes_used = 0  # stored image bytes of the rows it returned: bytes_read / bytes_used is the waste
        self.decode_cache_bytes = decode_cache_bytes
        self._decoded: dict[int, DecodedRow] = {}
        self._decoded_bytes = 0
        self._lock = threading.Lock()  # the group cache and counters, shared with the read-ahead thread
        self._pending: dict[tuple[int, int], Future[pa.Table]] = {}
        self._ahead_unused: set[tuple[int, int]] = set()  # read ahead, not yet asked for
        self._ahead_size: dict[tuple[int, int], int] = {}  # footer sizes of the groups read ahead or in flight
        self._ahead: ThreadPoolExecutor | None = None
        self._ahead_files = threading.local()

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shard_set"] = None
        state["_groups"], state["_group_bytes"] = OrderedDict(), 0
        state["_open"] = OrderedDict()
        state["_decoded"], state["_decoded_bytes"] = {}, 0  # each worker fills its own
        state["_lock"], state["_pending"], state["_ahead"], state["_ahead_files"] = None, {}, None, None
        state["_ahead_unused"], state["_ahead_size"] = set(), {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._ahead_files = threading.Lock(), threading.local()

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _group_of(self, shard: int, row: int, parquet: pq.ParquetFile) -> tuple[int, int]:
        """(row group, its first row) of a shard's row."""
        if shard not in self._row_groups:
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            self._row_groups[shard] = list(np.cumsum([0, *sizes[:-1]]))
        group = bisect.bisect_right(self._row_groups[shard], row) - 1
        return group, int(self._row_groups[shard][group])

    def _row(self, shard: int, row: int) -> dict[str, Any]:
        parquet = self._parquet(shard)
        group, first = self._group_of(shard, row, parquet)
        key = (shard, group)
        with self._lock:
            table = self._groups.get(key)
            if table is not None:
                self._groups.move_to_end(key)
            pending = self._pending.get(key)
            self._ahead_unused.discard(key)
        if table is None and pending is not None:  # the read-ahead thread has it in flight
            try:
                table = pending.result()
            except Exception:  # read it here instead: a real fault then raises from this read
                table = None
            with self._lock:
                self._ahead_unused.discard(key)  # it marked the group unasked-for while this waited
        if table is None:
            table = self._read_group(parquet, key)
        return table.slice(row - first, 1).to_pylist()[0]

    def _read_group(self, parquet: pq.ParquetFile, key: tuple[int, int]) -> pa.Table:
        table = parquet.read_row_group(key[1], columns=self._columns)
        meta = parquet.metadata.row_group(key[1])
        read = sum(
            meta.column(i).total_compressed_size
            for i in range(meta.num_columns)
            if meta.column(i).path_in_schema.split(".")[0] in self._wanted
        )
        with self._lock:
            self.bytes_read += read
            if key not in self._groups:
                self._groups[key] = table
                self._group_bytes += table.nbytes
            self._groups.move_to_end(key)
            if key in self._pending:  # read ahead: kept until an item asks for it
                self._ahead_unused.add(key)
            while len(self._groups) > 1 and self._group_bytes > self.group_cache_bytes:
                self._evict_one()
            self._pending.pop(key, None)
        return table

    def _evict_one(self) -> None:
        """Drop the least recently used group, sparing groups read ahead that no item has asked for yet (the
        reader's own reads interleave with the read-ahead's, so age alone would drop what comes next)."""
        victim = next((k for k in self._groups if k not in self._ahead_unused), next(iter(self._groups)))
        self._group_bytes -= self._groups.pop(victim).nbytes
        self._ahead_unused.discard(victim)

    def prefetch(self, indices: list[int]) -> None:
        """Start reading, in a background thread, the row groups of ``indices`` not cached or in flight.

        What an item returns does not change: a prefetched group is the group the item would read. Rows the
        decode cache holds need nothing. What is read ahead and not yet asked for stays within the group cache's
        budget, less room for the group being read: more would evict groups read ahead before their items ask
        for them and read them twice (two micro-batches of 1280 x 1024 rows are ~190 MB against a 64 MiB budget:
        2.2 bytes read per byte used, measured). The rest of ``indices`` waits for a later call."""
        with self._lock:  # what is still waiting for its item, summed once; each group submitted below adds to it
            waiting = self._ahead_unused | self._pending.keys()
            self._ahead_size = {k: v for k, v in self._ahead_size.items() if k in waiting}
            ahead = sum(self._ahead_size.values())
        for index in indices:
            if index in self._decoded or not 0 <= index < self.length:
                continue
            shard, row = self._locate(index)
            parquet = self._parquet(shard)
            group, _ = self._group_of(shard, row, parquet)
            key = (shard, group)
            size = parquet.metadata.row_group(group).total_byte_size
            with self._lock:
                if key in self._groups or key in self._pending:
                    continue
                if ahead and ahead + 2 * size > self.group_cache_bytes:
                    return
                if self._ahead is None:
                    assert self._shard_set is not None
                    threads = 1 if fsio.is_local(self._shard_set.fs) else REMOTE_READ_AHEAD_THREADS
                    self._ahead = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="diffx-read-ahead")
                # the footer goes along: a read-ahead thread opening its own handle on the shard need not parse it
                self._ahead_size[key] = size
                ahead += size
                self._pending[key] = self._ahead.submit(self._read_ahead, key, parquet.metadata)

    def _read_ahead(self, key: tuple[int, int], footer: pq.FileMetaData) -> pa.Table:
        try:
            files = getattr(self._ahead_files, "handles", None)  # each read-ahead thread keeps its own handles
            if files is None:
                files = self._ahead_files.handles = OrderedDict()
            parquet = _kept_open(files, key[0], lambda: self._reopen(key[0], footer))
            return self._read_group(parquet, key)
        except BaseException:
            with self._lock:
                self._pending.pop(key, None)
            raise

    def _parquet(self, shard: int) -> pq.ParquetFile:
        """The shard's open file, its footer parsed once: a footer per item would cost more than a small row."""
        shard_set = self._shard_set = self._shard_set or ShardSet(self.root, **self.storage_options)
        return _kept_open(self._open, shard, lambda: shard_set.open_shard(self.records[shard], in_memory=False))

    def _reopen(self, shard: int, footer: pq.FileMetaData) -> pq.ParquetFile:
        """A read-ahead thread's own handle on ``shard``, with the footer the reader parsed already."""
        assert self._shard_set is not None  # prefetch opened the shard through _parquet first
        return self._shard_set.reopen(self.records[shard], footer)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index)

    def item(self, index: int, generator: torch.Generator | None = None, *, crop: bool = True) -> dict[str, Any]:
        """Sample ``index`` in the model's frame: crop centred, at random from ``generator``, or (``crop=False``)
        the whole resized frame, whose latent a trainer can cache and crop later (``placement.latent_window``)."""
        row = self.decoded_row(index)
        height, width, frame = row.height, row.width, self.spec.frame
        placement = place(height, width, frame, generator) if crop else resize_only(height, width, frame)
        images = {}
        for name in self.modalities:
            # a fresh float array in one frame-sized pass (the cached row stays as stored): the division casts
            # as it reads, the same float32 values as a cast then a division, without the second pass
            array = np.divide(row.arrays[name], self.spec.modality(name).max_value, dtype=np.float32)
            # channels first as a view: a batch's stack makes it contiguous, a copy here would be a second pass
            image = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            images[name] = place_image(image, placement)
        boxes = torch.tensor([o["bbox"] for o in row.objects], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([o["category_id"] for o in row.objects], dtype=torch.int64)
        boxes, labels = place_boxes(boxes, labels, placement, self.spec.frame.min_box_visible)
        item = {
            "id": row.id,
            "images": images,
            "boxes": boxes,
            "labels": labels,
            "caption": row.caption,
            "size": (placement.height, placement.width),
            "placement": placement,
        }
        if self.layout:
            if row.layout is None:
                raise DataError(f"{self.root} ({row.id})", "the row has no layout map; the set's kind needs one")
            stored = stored_to_tensor(row.layout, self.spec)
            item["layout"] = place_image(stored, placement, nearest=is_label_map(self.spec))
        return item

    def decoded_row(self, index: int) -> DecodedRow:
        """Row ``index`` with its images decoded, from this process's cache when it holds it."""
        found = self._decoded.get(index)
        if found is not None:
            return found
        row = self._row(*self._locate(index))
        layout = None
        if self.layout:
            cell = row.get("layout")
            if cell and cell.get("bytes") is not None:
                layout = decode_array(cell["bytes"], f"{row['id']}:layout")
        self.bytes_used += sum(len(row[name]["bytes"]) for name in self.modalities)
        decoded = DecodedRow(
            id=row["id"],
            height=int(row["height"]),
            width=int(row["width"]),
            arrays={name: decode_array(row[name]["bytes"], f"{row['id']}:{name}") for name in self.modalities},
            objects=row["objects"],
            caption=row.get("caption"),
            layout=layout,
        )
        if self._decoded_bytes + decoded.nbytes <= self.decode_cache_bytes:
            for array in (*decoded.arrays.values(), decoded.layout):
                if array is not None:
                    array.flags.writeable = False  # a cached row is shared by every later read
            self._decoded[index] = decoded
            self._decoded_bytes += decoded.nbytes
        return decoded


def detection_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (and dense layouts) per modality; keep per-sample boxes/labels as lists.

    Frames of one batch must share a size: the set's frame policy gives that (a resolution with square crops
    batches any mix of source sizes); frames stored at mixed sizes without one are refused by name.
    """
    names = list(batch[0]["images"].keys())
    sizes = {tuple(b["images"][names[0]].shape[-2:]) for b in batch}
    if len(sizes) > 1:
        first = names[0]
        shown = ", ".join(f"{b['id']} {b['images'][first].shape[-1]}x{b['images'][first].shape[-2]}" for b in batch[:4])
        raise DataError(
            f"samples {shown}",
            "frames of different sizes in one batch; set data.frame.resolution (and crop: square) so every frame is "
            "resized and cropped to one model frame, then re-run ingest",
            field="data.frame",
        )
    out = {
        "id": [b["id"] for b in batch],
        "images": {n: torch.stack([b["images"][n] for b in batch]) for n in names},
        "boxes": [b["boxes"] for b in batch],
        "labels": [b["labels"] for b in batch],
        "caption": [b["caption"] for b in batch],
        "placement": [b.get("placement") for b in batch],
    }
    if "layout" in batch[0]:
        out["layout"] = torch.stack([b["layout"] for b in batch])
    return out


def _kept_open(
    handles: OrderedDict[int, pq.ParquetFile], shard: int, open_file: Callable[[], pq.ParquetFile]
) -> pq.ParquetFile:
    """``handles[shard]``, opened on first use; the OPEN_FILES used last stay open (least recently used closes)."""
    found = handles.get(shard)
    if found is not None:
        handles.move_to_end(shard)
        return found
    handles[shard] = found = open_file()
    if len(handles) > OPEN_FILES:
        handles.popitem(last=False)
    return found

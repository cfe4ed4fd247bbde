"""Resumable shard sets written by many workers through one door: open for a plan, claim, write, complete.

Belongs with the writer, not with any one stage: a shard is keyed by a ``plan_key`` that hashes whatever
determines its content, so any producer (generation today) can skip complete shards, rewrite stale ones
and publish the manifest only once every planned shard is complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diffx import fsio
from diffx.shards.lease import lease
from diffx.shards.manifest import (
    MANIFEST_NAME,
    RECORD_PREFIXES,
    ShardRecord,
    new_manifest,
    record_relpath,
    write_manifest,
)
from diffx.shards.writer import ShardSetWriter

if TYPE_CHECKING:
    from diffx.data.sample import Sample


@dataclass
class ShardClaim:
    """What a producer may do with one planned shard: skip it (``current``: complete for its key), leave it
    (``busy``: another worker holds its lease) or write it (``mine``, once, through :meth:`write`)."""

    status: Literal["current", "busy", "mine"]
    _write: Callable[[list[Sample]], ShardRecord] | None = None
    record: ShardRecord | None = None

    def write(self, samples: list[Sample]) -> ShardRecord:
        if self.status != "mine" or self._write is None or self.record is not None:
            raise RuntimeError(f"a {self.status} shard claim cannot write (or has written already)")
        self.record = self._write(samples)
        return self.record


class PlannedShardSet:
    """The one door a keyed producer writes a shard set through: open it for a plan of keys (shard index ->
    the key its content hashes to), claim each shard, write it, and complete the set.

    Opening retires what the plan no longer has (a manifest for another plan first, so the set never looks
    complete while shards change, then shards outside the plan); a claim skips a shard already complete for
    its key, or takes the shard's lease (see :mod:`diffx.shards.lease`) so that any number of workers on any
    number of machines can share the plan; :meth:`complete` publishes the manifest once every shard is
    complete, whoever calls it.
    """

    def __init__(self, writer: ShardSetWriter, split: str, keys: dict[int, str], lease_seconds: float):
        self.writer, self.split, self.keys, self.lease_seconds = writer, split, keys, lease_seconds
        self._retire_stale()

    def is_current(self, index: int) -> bool:
        record = self.writer.completed_record(self.split, index)
        return record is not None and record.plan_key == self.keys[index]

    @contextlib.contextmanager
    def claim(self, index: int) -> Iterator[ShardClaim]:
        """A claim on shard ``index`` for the ``with`` block; its lease is held (and renewed) until the block ends."""
        if self.is_current(index):
            yield ShardClaim("current")
            return
        lock = fsio.join(self.writer.root, self.split, f".part-{index:05d}.lock")
        with lease(lock, self.lease_seconds) as held:
            if not held:
                yield ShardClaim("busy")
                return
            yield ShardClaim("mine", self._writer_of(index))

    def _writer_of(self, index: int) -> Callable[[list[Sample]], ShardRecord]:
        return lambda samples: self.writer.write_shard(self.split, index, samples, plan_key=self.keys[index])

    def complete(self) -> bool:
        """Write the manifest when every planned shard is complete for its key; True when the set is complete.

        Any number of workers may call this: the manifest's content is the same whoever writes it.
        """
        records: list[ShardRecord] = []
        for index in sorted(self.keys):
            record = self.writer.completed_record(self.split, index)
            if record is None or record.plan_key != self.keys[index]:
                return False
            records.append(record)
        writer = self.writer
        write_manifest(
            writer.root,
            new_manifest(writer.spec, records, generated=writer.generated, params_hash=writer.params_hash),
            **writer.storage_options,
        )
        return True

    def _retire_stale(self) -> None:
        fs, root = self.writer.fs, self.writer.root_path
        manifest = f"{root}/{MANIFEST_NAME}"
        if fs.exists(manifest) and not all(self.is_current(i) for i in self.keys):
            fs.rm(manifest)
        folder = f"{root}/{self.split}"
        if fs.exists(folder):
            for entry in fs.ls(folder, detail=False):
                name = entry.rsplit("/", 1)[-1]
                shard_file = name.startswith(("part-", *RECORD_PREFIXES))
                if shard_file and int(name.split("-")[1].split(".")[0]) not in self.keys:
                    fs.rm(entry)


def recorded_shards(root: str, split: str, keys: dict[int, str], **storage_options: object) -> set[int]:
    """Shards whose sidecar record carries the planned key: a cheap progress view for a watcher (no shard is
    hashed; whether the set is complete is decided by ``PlannedShardSet.complete``, which checks the bytes)."""
    done = set()
    for index, key in keys.items():
        url = fsio.join(root, record_relpath(split, index))
        try:
            if fsio.read_json(url, **storage_options).get("plan_key") == key:
                done.add(index)
        except (OSError, ValueError, AttributeError):  # not written yet, or cut short
            continue
    return done

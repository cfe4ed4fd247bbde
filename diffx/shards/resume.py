"""Resumable shard sets written by many workers: per-shard locks, retiring stale shards, completing the set.

Belongs with the writer, not with any one stage: a shard is keyed by a ``plan_key`` that hashes whatever
determines its content, so any producer (generation today) can skip complete shards, rewrite stale ones
and publish the manifest only once every planned shard is complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def shard_lock(root: str, split: str, index: int, lease_seconds: float) -> Iterator[bool]:
    """The shard's lease (see :mod:`diffx.shards.lease`): True while this worker may write the shard."""
    with lease(fsio.join(root, split, f".part-{index:05d}.lock"), lease_seconds) as held:
        yield held


def is_current(writer: ShardSetWriter, split: str, index: int, key: str) -> bool:
    record = writer.completed_record(split, index)
    return record is not None and record.plan_key == key


def retire_stale(writer: ShardSetWriter, split: str, keys: dict[int, str]) -> None:
    """A manifest for another plan goes first (the set must not look complete while shards change), then
    shards the plan no longer has."""
    fs, root = writer.fs, writer.root_path
    manifest = f"{root}/{MANIFEST_NAME}"
    if fs.exists(manifest) and not all(is_current(writer, split, i, k) for i, k in keys.items()):
        fs.rm(manifest)
    folder = f"{root}/{split}"
    if fs.exists(folder):
        for entry in fs.ls(folder, detail=False):
            name = entry.rsplit("/", 1)[-1]
            if name.startswith(("part-", *RECORD_PREFIXES)) and int(name.split("-")[1].split(".")[0]) not in keys:
                fs.rm(entry)


def complete_set(writer: ShardSetWriter, split: str, keys: dict[int, str]) -> bool:
    """Write the manifest when every planned shard is complete for its key; True when the set is complete.

    Any number of workers may call this: the manifest's content is the same whoever writes it.
    """
    records: list[ShardRecord] = []
    for index in sorted(keys):
        record = writer.completed_record(split, index)
        if record is None or record.plan_key != keys[index]:
            return False
        records.append(record)
    write_manifest(
        writer.root,
        new_manifest(writer.spec, records, generated=writer.generated, params_hash=writer.params_hash),
        **writer.storage_options,
    )
    return True


def recorded_shards(root: str, split: str, keys: dict[int, str], **storage_options: object) -> set[int]:
    """Shards whose sidecar record carries the planned key: a cheap progress view for a watcher (no shard is
    hashed; whether the set is complete is decided by ``complete_set``, which checks the bytes)."""
    done = set()
    for index, key in keys.items():
        url = fsio.join(root, record_relpath(split, index))
        try:
            if fsio.read_json(url, **storage_options).get("plan_key") == key:
                done.add(index)
        except (OSError, ValueError, AttributeError):  # not written yet, or cut short
            continue
    return done

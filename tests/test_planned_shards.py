"""The one door a keyed producer writes a shard set through: open for a plan, claim, write, complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffx.data.demo import DEMO_SPEC
from diffx.shards.lease import lease
from diffx.shards.manifest import MANIFEST_NAME
from diffx.shards.reader import ShardSet
from diffx.shards.resume import PlannedShardSet
from diffx.shards.writer import ShardSetWriter

from .conftest import make_sample


def _open(root: Path, keys: dict[int, str]) -> PlannedShardSet:
    writer = ShardSetWriter(str(root), DEMO_SPEC, generated=True, params_hash="p")
    return PlannedShardSet(writer, "train", keys, lease_seconds=30)


def _write_all(shard_set: PlannedShardSet) -> list[str]:
    statuses = []
    for index in sorted(shard_set.keys):
        with shard_set.claim(index) as claim:
            statuses.append(claim.status)
            if claim.status == "mine":
                claim.write([make_sample(f"s{index}-{row}", seed=index * 10 + row) for row in range(2)])
    return statuses


def test_a_claimed_shard_is_written_once_then_current_and_the_set_completes(tmp_path: Path) -> None:
    keys = {0: "a", 1: "b"}
    shard_set = _open(tmp_path, keys)
    with shard_set.claim(0) as claim:
        claim.write([make_sample("only", seed=1)])
        with pytest.raises(RuntimeError, match="has written already"):
            claim.write([make_sample("again", seed=2)])
    assert not shard_set.complete() and not (tmp_path / MANIFEST_NAME).exists()  # shard 1 is missing
    assert _write_all(shard_set) == ["current", "mine"]
    assert shard_set.complete()
    assert ShardSet(str(tmp_path)).manifest.shards_of("train")  # readable, complete
    assert _write_all(_open(tmp_path, keys)) == ["current", "current"]  # a rerun redoes nothing


def test_a_shard_another_worker_holds_is_left_to_it(tmp_path: Path) -> None:
    shard_set = _open(tmp_path, {0: "a"})
    with lease(str(tmp_path / "train" / ".part-00000.lock"), 30) as held:  # the other worker
        assert held
        with shard_set.claim(0) as claim:
            assert claim.status == "busy"
            with pytest.raises(RuntimeError, match="busy shard claim cannot write"):
                claim.write([])
    assert not shard_set.complete()


def test_opening_for_a_new_plan_retires_the_old_manifest_and_shards_it_lacks(tmp_path: Path) -> None:
    _write_all(first := _open(tmp_path, {0: "a", 1: "b", 2: "c"}))
    assert first.complete()
    changed = _open(tmp_path, {0: "a", 1: "changed"})  # shard 1's content changes, shard 2 is no longer planned
    assert not (tmp_path / MANIFEST_NAME).exists()  # never complete-looking while shards change
    assert not list((tmp_path / "train").glob("part-00002*"))
    assert _write_all(changed) == ["current", "mine"]
    assert changed.complete()

"""The shard reader at real scale (issue #38): row groups sized to the access pattern, a shard-aware epoch order
that keeps positions, resume and the 1 == N processes contract, and integrity checked once per node."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from diffx import fsio
from diffx.data.images import encode_png
from diffx.data.sample import Sample
from diffx.errors import ShardError
from diffx.shards import reader as reader_module
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.train.data import BatchPlan, shard_order

from .conftest import DEMO_SPEC


def _noisy_sample(index: int, split: str = "train", size: int = 48) -> Sample:
    """Incompressible pixels, so every row stores about the same bytes."""
    rng = np.random.default_rng(index)
    images = {
        "rgb": encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), f"{index}-rgb", 1),
        "thermal": encode_png(rng.integers(0, 256, (size, size), dtype=np.uint8), f"{index}-t", 1),
        "depth": encode_png(rng.integers(0, 65536, (size, size), dtype=np.uint16), f"{index}-d", 1),
    }
    return Sample(f"r{index:05d}", split, size, size, images, [])


def _write(root: Path, rows: int, rows_per_shard: int, row_group_bytes: int) -> None:
    writer = ShardSetWriter(str(root), DEMO_SPEC, row_group_bytes=row_group_bytes)
    writer.finalize(writer.write_split("train", (_noisy_sample(i) for i in range(rows)), rows_per_shard))


def test_a_row_group_never_grows_past_its_target(tmp_path: Path) -> None:
    row_bytes = sum(len(i.data) for i in _noisy_sample(0).images.values())
    _write(tmp_path / "one", 12, 6, row_group_bytes=row_bytes)  # one row reaches the target: a group each
    _write(tmp_path / "three", 12, 6, row_group_bytes=int(3.5 * row_bytes))
    for name, per_group in (("one", 1), ("three", 3)):
        for shard in sorted((tmp_path / name / "train").glob("*.parquet")):
            meta = pq.ParquetFile(shard).metadata
            assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [per_group] * (6 // per_group)


def test_a_shuffled_epoch_reads_about_the_bytes_it_uses(tmp_path: Path) -> None:
    row_bytes = sum(len(i.data) for i in _noisy_sample(0).images.values())
    _write(tmp_path / "small", 40, 10, row_group_bytes=row_bytes)
    _write(tmp_path / "large", 40, 10, row_group_bytes=32 << 20)  # the old target: one group per shard
    ratios = {}
    for name in ("small", "large"):
        dataset = ShardDataset(str(tmp_path / name), "train", decode_cache_bytes=0, group_cache_bytes=0)
        for index in torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist():
            dataset.item(index)
        ratios[name] = dataset.bytes_read / dataset.bytes_used
    assert ratios["small"] <= 1.25 < 5 < ratios["large"], ratios


def test_the_shard_order_is_a_permutation_that_reads_few_shards_at_a_time() -> None:
    rows = (50, 30, 80, 40)
    order = shard_order(rows, 20, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(200))
    again = shard_order(rows, 20, torch.Generator().manual_seed(1))
    assert torch.equal(order, again)  # a pure function of the generator's seed
    starts = np.cumsum([0, *rows])
    shard_of = np.searchsorted(starts, order.numpy(), side="right") - 1
    for window in range(0, 200, 20):
        assert len(set(shard_of[window : window + 20])) <= 2  # 20 rows never span more than two shards here
    assert not torch.equal(order, torch.arange(200))


def test_shard_aware_plans_keep_positions_resume_and_any_process_count() -> None:
    """Each rank's positions map to the same rows whatever the world size, and step k onward is the same
    stream whether the run started at 0 or resumed at k: the contract global shuffling has."""
    rows = (16, 16, 16, 16)
    plans = {w: BatchPlan(64, 8, 1, w, seed=5, shard_rows=rows, shuffle_buffer=8) for w in (1, 2, 4)}
    one = plans[1]
    for world, plan in plans.items():
        for step in range(20):  # past one epoch (8 steps)
            gathered = [p for rank in range(world) for p in plan.positions(step, 0, rank)]
            assert gathered == one.positions(step, 0, 0)
    assert torch.equal(one.permutation(3), BatchPlan(64, 8, 1, 1, 5, rows, 8).permutation(3))
    assert not torch.equal(one.permutation(3), one.permutation(4))  # a new order every epoch


# ------------------------------------------------------------------------------------ integrity once per node
def _aged(root: Path, seconds: float = 60.0) -> None:
    old = time.time() - seconds
    for path in root.rglob("*.parquet"):
        os.utime(path, (old, old))


def test_a_shard_verified_on_this_node_is_not_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFX_VERIFIED_CACHE", str(tmp_path / "stamps"))
    _write(tmp_path / "set", 8, 4, row_group_bytes=1 << 20)
    _aged(tmp_path / "set")
    first = ShardSet(str(tmp_path / "set"))
    assert len(first.read_table("train")) == 8  # hashed, then stamped
    assert len(list((tmp_path / "stamps").iterdir())) == 2

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("hashed a shard this node already verified")

    monkeypatch.setattr(fsio, "read_hashed", no_hashing)
    assert len(ShardSet(str(tmp_path / "set")).read_table("train")) == 8  # another process: footer only
    monkeypatch.undo()
    monkeypatch.setenv("DIFFX_VERIFIED_CACHE", str(tmp_path / "stamps"))
    shard = tmp_path / "set" / "train" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[100:164] = bytes(255 - b for b in data[100:164])
    shard.write_bytes(bytes(data))  # same size, new mtime: another key, so hashed again and caught
    with pytest.raises(ShardError, match="sha256"):
        ShardSet(str(tmp_path / "set")).read_table("train")


def test_a_file_written_seconds_ago_is_never_stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its mtime may not move on a same-size rewrite within the clock's granularity (git's racily clean case)."""
    monkeypatch.setenv("DIFFX_VERIFIED_CACHE", str(tmp_path / "stamps"))
    _write(tmp_path / "set", 4, 4, row_group_bytes=1 << 20)
    ShardSet(str(tmp_path / "set")).read_table("train")
    assert not (tmp_path / "stamps").exists()
    monkeypatch.setenv("DIFFX_VERIFIED_CACHE", "")  # switched off
    _aged(tmp_path / "set")
    ShardSet(str(tmp_path / "set")).read_table("train")
    assert not (tmp_path / "stamps").exists() and reader_module.verified_cache() is None


def test_shuffle_shards_reads_the_rows_per_shard_of_the_training_set(tmp_path: Path) -> None:
    from diffx.errors import ConfigError
    from diffx.train.data import shard_rows_of

    _write(tmp_path / "set", 10, 4, row_group_bytes=1 << 20)
    assert shard_rows_of(ShardDataset(str(tmp_path / "set"), "train")) == (4, 4, 2)
    with pytest.raises(ConfigError, match="shuffle: shards needs a dataset read from a shard set"):
        shard_rows_of(list(range(10)))


def test_a_shard_aware_window_reads_each_row_group_once(tmp_path: Path) -> None:
    """Rows of a window arrive shuffled; the groups they sit in stay cached until the window is read."""
    row_bytes = sum(len(i.data) for i in _noisy_sample(0).images.values())
    _write(tmp_path / "set", 60, 20, row_group_bytes=5 * row_bytes)  # 5 rows a group, 4 groups a shard
    order = shard_order((20, 20, 20), 20, torch.Generator().manual_seed(2)).tolist()
    dataset = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    for index in order:
        dataset.item(index)
    assert dataset.bytes_read / dataset.bytes_used < 1.1
    bounded = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0, group_cache_bytes=0)
    for index in order:
        bounded.item(index)
    assert bounded.bytes_read / bounded.bytes_used > 2  # one group kept: a shuffled window re-reads them


def test_later_positions_follow_the_samplers_order() -> None:
    from diffx.train.data import PlanSampler

    plan = BatchPlan(dataset_size=50, batch_size=8, grad_accum=2, world_size=2, seed=0)
    for rank in (0, 1):
        batches = list(PlanSampler(plan, rank, 0, 6))
        for i, batch in enumerate(batches):
            for later in range(1, len(batches) - i):
                assert plan.later_positions(batch[0], later) == batches[i + later]


def test_read_ahead_reads_each_group_once_and_changes_no_item(tmp_path: Path) -> None:
    row_bytes = sum(len(i.data) for i in _noisy_sample(0).images.values())
    _write(tmp_path / "set", 30, 10, row_group_bytes=2 * row_bytes)  # 2 rows a group
    order = torch.randperm(30, generator=torch.Generator().manual_seed(1)).tolist()
    plain = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    ahead = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    for start in range(0, 30, 5):
        ahead.prefetch(order[start + 5 : start + 15])  # what the loop asks for: the next two batches
        for index in order[start : start + 5]:
            mine, theirs = ahead.item(index), plain.item(index)
            assert mine["id"] == theirs["id"]
            assert all(torch.equal(mine["images"][m], theirs["images"][m]) for m in mine["images"])
    assert ahead._pending == {}
    assert ahead.bytes_read == plain.bytes_read  # nothing fetched twice, nothing fetched for nothing
    assert ahead._ahead is not None  # the reads did go to the background thread


def test_a_failed_read_ahead_loses_no_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A background read that fails (a dropped connection) leaves nothing behind: the reader reads the group
    itself, so the item arrives, and a fault that is real raises from that read, named by its shard."""
    _write(tmp_path / "set", 6, 3, row_group_bytes=1)
    dataset = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    expected = ShardDataset(str(tmp_path / "set"), "train").item(1)
    dataset.item(0)  # opens and verifies shard 0
    failed = []

    def broken(*_: object, **__: object) -> None:
        failed.append(1)
        raise ShardError("shard 0: unreadable Parquet (planted)")

    monkeypatch.setattr(ShardSet, "reopen", broken)
    dataset.prefetch([1])
    assert torch.equal(dataset.item(1)["images"]["rgb"], expected["images"]["rgb"])
    assert failed and dataset._pending == {} and not dataset._ahead_unused


def test_training_with_read_ahead_draws_the_same_batches(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from diffx.shards.dataset import detection_collate
    from diffx.train.data import FRAME_CROP, PlanSampler, StreamDataset, shard_rows_of

    _write(tmp_path / "set", 24, 6, row_group_bytes=1)
    batches = {}
    for ahead, workers in ((0, 0), (2, 0), (2, 2)):
        dataset = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
        plan = BatchPlan(24, 4, 1, 1, 3, shard_rows=shard_rows_of(dataset), shuffle_buffer=8)
        loader = DataLoader(
            StreamDataset(dataset, plan, FRAME_CROP, ahead),
            batch_sampler=PlanSampler(plan, 0, 0, 10),
            collate_fn=detection_collate,
            num_workers=workers,
        )
        batches[(ahead, workers)] = [(b["id"], b["images"]["rgb"]) for b in loader]
    for key in ((2, 0), (2, 2)):
        assert [ids for ids, _ in batches[key]] == [ids for ids, _ in batches[(0, 0)]]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(batches[key], batches[(0, 0)], strict=True))


def test_read_ahead_groups_outlive_older_reads_until_asked_for(tmp_path: Path) -> None:
    """The cache holds three batches of one-row groups; the reader's reads interleave with the read-ahead's, and
    still no group read ahead is dropped before its item is read (each group is read once)."""
    row_bytes = sum(len(i.data) for i in _noisy_sample(0).images.values())
    _write(tmp_path / "set", 48, 12, row_group_bytes=1)
    probe = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    probe.item(0)
    group_bytes = next(iter(probe._groups.values())).nbytes
    assert group_bytes >= row_bytes
    dataset = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0, group_cache_bytes=13 * group_bytes)
    order = torch.randperm(48, generator=torch.Generator().manual_seed(4)).tolist()
    for start in range(0, 48, 4):
        dataset.prefetch(order[start + 4 : start + 12])
        for future in list(dataset._pending.values()):  # the read-ahead wins every race: its groups are older
            future.result()
        for index in order[start : start + 4]:
            dataset.item(index)
    once = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    for index in order:
        once.item(index)
    assert dataset.bytes_read == once.bytes_read  # every group read once
    assert not dataset._ahead_unused


def test_read_ahead_asked_for_more_than_the_group_cache_holds_reads_each_group_once(tmp_path: Path) -> None:
    """Large frames: two micro-batches of row groups can outweigh the cache (1280 x 1024 rows read 2.2 bytes per
    byte used before). Read-ahead then stops at the budget, and no group is evicted before its item and read
    again; the items are the ones a reader without read-ahead returns."""
    _write(tmp_path / "set", 40, 10, row_group_bytes=1)  # one row a group
    probe = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0)
    footer_size = probe._parquet(0).metadata.row_group(0).total_byte_size
    budget = 5 * footer_size  # read ahead at most three groups, where the loop asks for eight
    ahead = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0, group_cache_bytes=budget)
    plain = ShardDataset(str(tmp_path / "set"), "train", decode_cache_bytes=0, group_cache_bytes=budget)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(2)).tolist()
    most_ahead = 0
    for start in range(0, 40, 4):
        ahead.prefetch(order[start + 4 : start + 12])
        most_ahead = max(most_ahead, len(ahead._pending) + len(ahead._ahead_unused))
        for future in list(ahead._pending.values()):  # the read-ahead wins every race
            future.result()
        for index in order[start : start + 4]:
            mine, theirs = ahead.item(index), plain.item(index)
            assert mine["id"] == theirs["id"]
            assert all(torch.equal(mine["images"][m], theirs["images"][m]) for m in mine["images"])
    assert 1 <= most_ahead <= 4
    assert ahead.bytes_read == plain.bytes_read  # each group read once


def test_a_reader_s_first_opening_hashes_a_shard_without_holding_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500-row shard of 1280 x 1024 frames is 3 GB: holding it to hash it was each worker's peak memory."""
    import tracemalloc

    monkeypatch.setenv("DIFFX_VERIFIED_CACHE", "")  # every opening hashes
    writer = ShardSetWriter(str(tmp_path / "set"), DEMO_SPEC, row_group_bytes=1 << 20)
    writer.finalize(writer.write_split("train", (_noisy_sample(i, size=128) for i in range(96)), 96))  # ~10 MB
    record = ShardSet(str(tmp_path / "set")).manifest.shards_of("train")[0]
    peaks = {}
    for in_memory in (True, False):
        shards = ShardSet(str(tmp_path / "set"))
        tracemalloc.start()
        parquet = shards.open_shard(record, in_memory=in_memory)
        peaks[in_memory] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert parquet.metadata.num_rows == 96
    assert peaks[True] > record.bytes > 3 * peaks[False], (record.bytes, peaks)
    broken = tmp_path / "set" / record.path
    broken.write_bytes(broken.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    with pytest.raises(ShardError, match="sha256"):
        ShardSet(str(tmp_path / "set")).open_shard(record, in_memory=False)

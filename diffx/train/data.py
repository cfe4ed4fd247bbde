"""Deterministic, resumable batching shared by the training loops.

The data position is a pure function of the step: sample ``j`` of global batch ``step`` is stream
position ``p = step * batch + j``, taken from the permutation of epoch ``p // n`` (seeded by the run seed
and the epoch). Every per-sample random draw (crop, flip, posterior noise, diffusion noise) comes from a
generator seeded by ``(seed, p)``, so a sample gets the same augmentation whichever process or
micro-batch handles it: 1 process == N processes with the same global batch, and resume == no stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from diffx.data.seeds import seed_for
from diffx.errors import ConfigError

FRAME_CROP = 20  # purpose of the per-sample frame-crop generator (diffx/data/frame.py)


def sample_generator(seed: int, position: int, purpose: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, position, purpose))


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is cut into micro-batches per rank."""

    dataset_size: int
    batch_size: int
    grad_accum: int
    world_size: int
    seed: int
    shard_rows: tuple[int, ...] = ()  # rows per shard, in set order: a shard-aware order when given
    shuffle_buffer: int = 2048

    def __post_init__(self) -> None:
        if self.dataset_size <= 0:
            raise ValueError("the training split is empty")
        if self.batch_size % (self.grad_accum * self.world_size):
            raise ValueError(
                f"batch_size {self.batch_size} must be divisible by grad_accum {self.grad_accum} "
                f"x processes {self.world_size}"
            )

    @property
    def micro_batch(self) -> int:
        return self.batch_size // (self.grad_accum * self.world_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed_for(self.seed, epoch))
        if not self.shard_rows:
            return torch.randperm(self.dataset_size, generator=generator)
        return shard_order(self.shard_rows, self.shuffle_buffer, generator)

    def positions(self, step: int, micro: int, rank: int) -> list[int]:
        start = step * self.batch_size + micro * (self.batch_size // self.grad_accum) + rank * self.micro_batch
        return list(range(start, start + self.micro_batch))

    def later_positions(self, first: int, later: int) -> list[int]:
        """The positions of the micro-batch ``later`` micro-batches after the one starting at ``first``, for the same
        rank (the inverse of ``positions``, then forward along ``PlanSampler``'s order)."""
        step, offset = divmod(first, self.batch_size)
        micro, within = divmod(offset, self.batch_size // self.grad_accum)
        rank = within // self.micro_batch
        step, micro = divmod(step * self.grad_accum + micro + later, self.grad_accum)
        return self.positions(step, micro, rank)


def shard_order(shard_rows: tuple[int, ...], window: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch's order that reads a set shard by shard: the shards in a random order, then the rows of each
    ``window`` consecutive ones shuffled (webdataset's and MosaicML streaming's bounded shuffle, as a permutation).

    Still one permutation of every row per epoch, so positions, resume and the 1 == N processes contract of
    :class:`BatchPlan` hold unchanged; a window spans at most ``window / rows per shard + 1`` shards."""
    starts = np.cumsum([0, *shard_rows[:-1]])
    stream = torch.cat(
        [
            torch.arange(int(starts[s]), int(starts[s]) + shard_rows[s])
            for s in torch.randperm(len(shard_rows), generator=generator).tolist()
        ]
    )
    for start in range(0, len(stream), window):
        chunk = stream[start : start + window]
        stream[start : start + window] = chunk[torch.randperm(len(chunk), generator=generator)]
    return stream


def shard_rows_of(dataset: Any) -> tuple[int, ...]:
    """Rows per shard of a shard-set dataset (what ``shuffle: shards`` orders by)."""
    records = getattr(dataset, "records", None)
    if records is None:
        raise ConfigError(f"shuffle: shards needs a dataset read from a shard set, got {type(dataset).__name__}")
    return tuple(int(r.rows) for r in records)


class PlanSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of stream positions from ``start_step`` on, for a DataLoader over a
    ``StreamDataset`` (which turns each position into its sample and its seeded frame crop)."""

    def __init__(self, plan: BatchPlan, rank: int, start_step: int, steps: int):
        self.plan, self.rank, self.start_step, self.steps = plan, rank, start_step, steps

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            for micro in range(self.plan.grad_accum):
                yield self.plan.positions(step, micro, self.rank)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.plan.grad_accum


class StreamDataset(Dataset):
    """A dataset read by stream position: the sample the plan puts there, cropped by the generator of
    ``(seed, position, purpose)`` (so a sample's crop does not depend on the process or micro-batch)."""

    def __init__(self, dataset: Any, plan: BatchPlan, purpose: int, read_ahead: int = 0):
        self.dataset, self.plan, self.purpose = dataset, plan, purpose
        self.read_ahead = read_ahead if callable(getattr(dataset, "prefetch", None)) else 0
        self._perm_cache: dict[int, torch.Tensor] = {}

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.plan.dataset_size)
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: self.plan.permutation(epoch)}
        return int(self._perm_cache[epoch][offset])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, positions: list[int]) -> list[dict[str, Any]]:
        """One micro-batch (what a DataLoader with a batch sampler asks for); first, the row groups of this data
        process's next ``read_ahead`` micro-batches go to the dataset's read-ahead (workers take micro-batches
        in turn, so this process's next one lies ``workers`` micro-batches on)."""
        if self.read_ahead and positions:
            info = get_worker_info()
            workers = info.num_workers if info is not None else 1
            ahead = [
                p for k in range(1, self.read_ahead + 1) for p in self.plan.later_positions(positions[0], k * workers)
            ]
            self.dataset.prefetch([self.index(p) for p in ahead])
        return [self[p] for p in positions]

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = getattr(self.dataset, "item", None)
        if item is None:  # a dataset without a frame policy (e.g. a ConcatDataset): frames as it gives them
            return self.dataset[self.index(position)]
        return item(self.index(position), sample_generator(self.plan.seed, position, self.purpose))

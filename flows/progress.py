"""Per-shard progress of a generation run, read from the shard set itself.

Workers may be threads, Ray tasks on other hosts, or Slurm jobs: what they all share is the output storage.
The watcher reads the shards' sidecar records (a few hundred bytes each, no shard is hashed) and turns them
into the flow's progress artifact with samples/s and ETA, as each shard lands, not as each worker ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from diffx.config import GenerateConfig
from diffx.sample.generate import expected_keys
from diffx.shards.resume import recorded_shards


@dataclass
class ShardWatch:
    options: GenerateConfig
    rows: dict[int, int] = field(init=False)
    keys: dict[int, str] = field(init=False)
    done: set[int] = field(init=False)
    started: float = field(init=False)
    done_at_start: int = field(init=False)

    def __post_init__(self) -> None:
        by_shard, self.keys = expected_keys(self.options)
        self.rows = {index: len(rows) for index, rows in by_shard.items()}
        self.done = recorded_shards(self.options.output, self.options.split, self.keys)
        self.done_at_start = self.samples_done
        self.started = time.monotonic()

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    @property
    def samples_done(self) -> int:
        return sum(self.rows[i] for i in self.done)

    def poll(self) -> dict[str, Any]:
        """Look again at the shards not yet recorded; samples/s counts only what this run made."""
        waiting = {i: k for i, k in self.keys.items() if i not in self.done}
        self.done |= recorded_shards(self.options.output, self.options.split, waiting)
        elapsed = time.monotonic() - self.started
        made = self.samples_done - self.done_at_start
        rate = made / elapsed if elapsed > 0 else 0.0
        left = self.total - self.samples_done
        return {
            "shards_done": len(self.done),
            "shards": len(self.keys),
            "samples_done": self.samples_done,
            "samples": self.total,
            "percent": 100.0 * self.samples_done / max(1, self.total),
            "samples_per_s": round(rate, 3),
            "eta_s": round(left / rate) if rate > 0 else None,
        }


def describe(state: dict[str, Any]) -> str:
    eta = "unknown" if state["eta_s"] is None else f"{state['eta_s'] // 60}m{state['eta_s'] % 60:02d}s"
    return (
        f"{state['samples_done']}/{state['samples']} samples in {state['shards_done']}/{state['shards']} shards; "
        f"{state['samples_per_s']} samples/s; ETA {eta}"
    )

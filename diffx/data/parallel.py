"""Build pending samples in worker processes, yielding them in the reader's order.

Decoding a 1280x1024 JPEG pair and encoding it as canonical PNG is about 0.35 s of one core, so ingest of a
real set is bound by it and scales with processes. Readers hold open files, parsed annotations and closures,
none of which pickle, so the workers are forked after the reader has listed the source: each inherits the
list of pending samples and is sent only index ranges. Results come back in submission order, so the rows
of the shard set (and its bytes) are the same for any number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from diffx.data.readers.base import Pending
from diffx.data.sample import Rejected, Sample

Item = Sample | Rejected
Finish = Callable[[Item], Item]

CHUNK = 4  # samples per task: large enough to amortise the round trip, small enough to keep both cores busy
_JOBS: tuple[list[Pending | Item], Finish] | None = None  # set in the parent just before the pool forks


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(requested: int) -> int:
    """0 means every core this process may use."""
    return usable_cpus() if requested == 0 else requested


def _finish_one(item: Pending | Item, finish: Finish) -> Item:
    return finish(item.resolve() if isinstance(item, Pending) else item)


def _build_range(start: int, stop: int) -> list[Item]:
    assert _JOBS is not None, "worker started without the pending list (not a fork?)"
    items, finish = _JOBS
    return [_finish_one(items[i], finish) for i in range(start, stop)]


def resolved(items: Iterable[Pending | Item], finish: Finish, workers: int) -> Iterator[Item]:
    """Each pending sample built (and passed through ``finish``) in order, on ``workers`` processes.

    With one worker, or where processes cannot be forked, it builds in this process and streams.
    """
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for item in items:
            yield _finish_one(item, finish)
        return
    global _JOBS
    jobs = list(items)  # the listing only: images are read in the workers
    _JOBS = (jobs, finish)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            ranges = deque((start, min(start + CHUNK, len(jobs))) for start in range(0, len(jobs), CHUNK))
            running: deque[Future[list[Item]]] = deque()
            while ranges or running:
                while ranges and len(running) < 2 * workers:  # bounded: results hold encoded images
                    running.append(pool.submit(_build_range, *ranges.popleft()))
                yield from running.popleft().result()
    finally:
        _JOBS = None

"""Keep the memory a training reader frees for the next item, instead of handing it back to the kernel.

Every item the reader returns allocates a few MB (decoded PNGs, their float32 copy, the tensors) and frees them
when the batch is done. glibc's malloc gives large freed blocks back to the kernel (``munmap``, or trimming the
top of the heap once more than a few hundred KB are free there), so the next item faults the same pages in again
one by one: 3 ms of system time for each 512 x 512 RGB + thermal + depth item, a sixth of the reader's CPU time
(benchmarks/loader_scale.py, phase ``shards_read_ahead_glibc_defaults``). Serving blocks up to 32 MiB from the heap
and trimming it only past 64 MiB of free memory keeps those pages mapped; a process then holds at most 64 MiB it is
not using.

Process-wide, so it is the training loop that asks for it (in its own process and in each DataLoader worker),
never a reader on import. Other C libraries (musl, macOS) have no such behaviour to change: a no-op there.
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's ceiling for this setting on 64-bit systems
TRIM_THRESHOLD_BYTES = 64 << 20


@functools.cache
def keep_freed_buffers() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True when they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: setting it fixes both thresholds (glibc stops adjusting them as blocks are freed)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def worker_init(_worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: a spawned worker does not inherit the parent's malloc settings."""
    keep_freed_buffers()

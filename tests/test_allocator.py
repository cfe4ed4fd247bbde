"""The training loop's malloc settings: freed item buffers stay mapped for the next item."""

from __future__ import annotations

import subprocess
import sys

import pytest

# an item's worth of buffers (a few MB each, alive together), then freed; page faults counted over 50 items
ITEMS = """
import resource, sys
import numpy as np
from diffx.shards.allocator import keep_freed_buffers
if sys.argv[1] == "probe":  # glibc or not, asked in a child: the pytest process keeps its own malloc settings
    print(int(keep_freed_buffers()))
    sys.exit()
if sys.argv[1] == "keep":
    assert keep_freed_buffers()
def item():
    held = [np.ones(n << 20, np.uint8) for n in (1, 3, 5, 2)]
    return sum(int(a[-1]) for a in held)
item()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    item()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", ITEMS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_item_buffers_are_reused_instead_of_faulted_in_again() -> None:
    if not _page_faults("probe"):
        pytest.skip("not glibc")
    plain, kept = _page_faults("plain"), _page_faults("keep")
    # 50 items of 11 MB are ~140,000 pages: the default allocator faults most of them in again, the kept heap none
    assert plain > 20_000
    assert kept < plain / 20

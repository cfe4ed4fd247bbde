"""Shard leases: taken over from dead or silent holders, respected while their holder beats, on disk and on a
store with conditional create (fsspec's memory filesystem stands in for an object store)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec

from diffx.shards.lease import Lease, lease


def _plant(path: Path, host: str, pid: int, expires_in: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": "other", "host": host, "pid": pid, "expires": time.time() + expires_in}))


def test_free_lease_is_held_for_the_block_and_released(tmp_path: Path) -> None:
    url = str(tmp_path / "a" / ".part-00000.lock")
    with lease(url, 30) as held:
        assert held
        found = Lease.decode(Path(url).read_bytes())
        assert found and found.host == socket.gethostname() and found.pid == os.getpid()
        with lease(url, 30) as second:
            assert not second  # a live holder in this very process
    assert not Path(url).exists()


def test_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / ".part-00000.lock"
    _plant(path, socket.gethostname(), int(dead.stdout), expires_in=600)
    with lease(str(path), 30) as held:
        assert held


def test_other_host_is_respected_until_its_lease_expires(tmp_path: Path) -> None:
    path = tmp_path / ".part-00000.lock"
    _plant(path, "pod-7", 1, expires_in=600)
    with lease(str(path), 30) as held:
        assert not held
    assert json.loads(path.read_text())["host"] == "pod-7"  # not touched
    _plant(path, "pod-7", 1, expires_in=-1)
    with lease(str(path), 30) as held:
        assert held


def test_unreadable_lease_counts_as_expired(tmp_path: Path) -> None:
    path = tmp_path / ".part-00000.lock"
    path.write_bytes(b'{"owner": "x", "ho')  # holder killed mid-write
    with lease(str(path), 30) as held:
        assert held


def test_heartbeat_keeps_a_long_hold_alive(tmp_path: Path) -> None:
    url = str(tmp_path / ".part-00000.lock")
    with lease(url, 1.5) as held:
        assert held
        first = Lease.decode(Path(url).read_bytes())
        time.sleep(2.0)  # longer than the lease: only renewal keeps it
        renewed = Lease.decode(Path(url).read_bytes())
        assert first and renewed and renewed.owner == first.owner and renewed.expires > first.expires
        assert renewed.expires > time.time()


def test_object_store_with_conditional_create(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    url = f"memory://leases-{uuid.uuid4().hex}/train/.part-00003.lock"
    with lease(url, 30) as held:
        assert held
        with lease(url, 30) as second:
            assert not second
    assert not fs.exists(url)
    fs.pipe(url, json.dumps({"owner": "o", "host": "pod-1", "pid": 1, "expires": time.time() - 1}).encode())
    with lease(url, 30) as held:
        assert held

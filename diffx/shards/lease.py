"""Leases on shards: who is writing a shard, from which host, and until when.

A lock that only records a pid cannot be judged from another host, so a killed pod on a shared filesystem
would block its shard forever. A lease carries an expiry that its holder keeps pushing forward (a
heartbeat thread); any worker may take over a lease whose holder died on this host or stopped beating.
A taken-over shard is rewritten from the same plan, so two writers at worst write identical bytes.

Creation is atomic where the storage offers it: ``O_EXCL`` on local disks, ``mode="xb"`` (a conditional
put, e.g. S3's If-None-Match) on object stores whose fsspec driver supports it; elsewhere it falls back to
write-then-read-back plus expiry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from diffx import fsio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    owner: str
    host: str
    pid: int
    expires: float  # epoch seconds

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Lease | None:
        """None for an unreadable lease (a holder killed mid-write): treated as expired."""
        try:
            raw = json.loads(data.decode())
            return cls(str(raw["owner"]), str(raw["host"]), int(raw["pid"]), float(raw["expires"]))
        except (ValueError, KeyError, TypeError):
            return None

    def stale(self, now: float) -> bool:
        """Expired, or held by a process of this host that is gone (no need to wait out the expiry)."""
        if self.expires < now:
            return True
        return self.host == socket.gethostname() and not _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Store:
    """Create / read / replace / delete one lease file, atomically where the filesystem allows."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.path = fsio.get_fs(url)
        self.local = fsio.local_path(url)

    def create(self, lease: Lease) -> bool:
        """True when this call created the lease file (nobody else holds it)."""
        if self.local is not None:
            os.makedirs(os.path.dirname(self.local), exist_ok=True)
            try:
                fd = os.open(self.local, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(lease.encode())
            return True
        try:
            with self.fs.open(self.path, "xb") as handle:
                handle.write(lease.encode())
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):  # the driver has no conditional create
            if self.fs.exists(self.path):
                return False
            fsio.write_bytes_atomic(self.url, lease.encode())
            time.sleep(0.05)  # a racing writer's put lands; the last one wins and the others see it
            return self.read() == lease

    def read(self) -> Lease | None:
        try:
            return Lease.decode(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def replace(self, lease: Lease) -> None:
        fsio.write_bytes_atomic(self.url, lease.encode())

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path)

    def take_over(self, stale: Lease | None) -> bool:
        """Remove a stale lease, but only the one judged stale: a fresh one created meanwhile is kept."""
        if self.local is not None:
            tomb = f"{self.local}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.local, tomb)  # atomic: of two workers taking over, one renames
            except FileNotFoundError:
                return False
            with open(tomb, "rb") as handle:
                moved = Lease.decode(handle.read())
            if moved != stale:  # another worker's fresh lease: give it back
                with contextlib.suppress(OSError):
                    os.link(tomb, self.local)
                os.unlink(tomb)
                return False
            os.unlink(tomb)
            return True
        if self.read() != stale:
            return False
        self.remove()
        return True


class _Heartbeat(threading.Thread):
    """Pushes the expiry forward every third of the lease; stops when the lease was taken from us."""

    def __init__(self, store: _Store, lease: Lease, seconds: float):
        super().__init__(daemon=True, name=f"lease {store.path}")
        self.store, self.lease, self.seconds = store, lease, seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.seconds / 3):
            current = self.store.read()
            if current is None or current.owner != self.lease.owner:
                log.warning("lease %s was taken over; the shard is rewritten by its new holder", self.store.path)
                return
            self.lease = Lease(self.lease.owner, self.lease.host, self.lease.pid, time.time() + self.seconds)
            with contextlib.suppress(OSError):
                self.store.replace(self.lease)


@contextlib.contextmanager
def lease(url: str, seconds: float) -> Iterator[bool]:
    """Hold the lease at ``url`` for the block; yields False (and holds nothing) when a live holder has it."""
    store = _Store(url)
    mine = Lease(uuid.uuid4().hex, socket.gethostname(), os.getpid(), time.time() + seconds)
    acquired = store.create(mine)
    if not acquired:
        current = store.read()
        if (current is None or current.stale(time.time())) and store.take_over(current):
            log.info("taking over the lease %s from %s", url, _holder(current))
            acquired = store.create(mine)
    if not acquired:
        yield False
        return
    beat = _Heartbeat(store, mine, seconds)
    beat.start()
    try:
        yield True
    finally:
        beat.stopped.set()
        beat.join()
        current = store.read()
        if current is not None and current.owner == mine.owner:
            store.remove()


def _holder(lease: Lease | None) -> str:
    return "an unreadable lease" if lease is None else f"{lease.host} pid {lease.pid}"

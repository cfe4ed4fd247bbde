"""fsspec helpers: every write in diffx goes through here so local paths and object stores behave alike.

The rule is *write to a hidden temporary name in the same folder, then rename*: a reader (or a rerun
after a crash) never sees a partial file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs


def get_fs(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem and the protocol-less path for ``url``."""
    return url_to_fs(str(url), **storage_options)


def join(base: str, *parts: str) -> str:
    """Join URL/path parts with '/', keeping any protocol prefix of ``base``."""
    out = str(base).rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def temp_name(path: str) -> str:
    """A hidden sibling name: '.'-prefixed files are ignored by pyarrow.dataset and by our readers."""
    head, _, tail = path.rpartition("/")
    name = f".{tail}.tmp-{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


@contextlib.contextmanager
def atomic_open(fs: fsspec.AbstractFileSystem, path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and rename it into place on success only."""
    parent = path.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = temp_name(path)
    try:
        with fs.open(tmp, mode) as handle:
            yield handle
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


def write_bytes_atomic(url: str, data: bytes, **storage_options: Any) -> None:
    fs, path = get_fs(url, **storage_options)
    with atomic_open(fs, path, "wb") as handle:
        handle.write(data)


def write_json_atomic(url: str, obj: Any, **storage_options: Any) -> None:
    """JSON with sorted keys and a trailing newline, so equal content gives equal bytes (DVC hashes)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes_atomic(url, text.encode("utf-8"), **storage_options)


def read_json(url: str, **storage_options: Any) -> Any:
    fs, path = get_fs(url, **storage_options)
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class HashingWriter:
    """A write-only file wrapper that hashes and counts bytes as they pass.

    Lets the shard writer record sha256 and size without reading the file back.
    """

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._hash = hashlib.sha256()
        self.bytes_written = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.bytes_written += view.nbytes
        self._raw.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        # The underlying handle is owned (and closed) by atomic_open.
        self.closed = True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def local_path(url: str) -> str | None:
    """The OS path for a local URL, or None for a remote one."""
    fs, path = get_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return os.fspath(path) if "file" in protocols or "local" in protocols else None

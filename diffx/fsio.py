"""fsspec helpers: every write in diffx goes through here so local paths and object stores behave alike.

The rule is *write to a hidden temporary name in the same folder, then rename*: a reader (or a rerun
after a crash) never sees a partial file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

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


class Hashed(NamedTuple):
    data: bytes  # empty unless the bytes were kept
    sha256: str
    size: int  # bytes hashed: the size of exactly what the digest covers, with no second look at the file


def read_hashed(fs: fsspec.AbstractFileSystem, path: str, *, keep: bool = True, chunk: int = 1 << 20) -> Hashed:
    """The file's bytes (empty unless ``keep``), their sha256 and their count, from one pass over the file.

    One loop for every integrity check: the shard reader keeps the bytes it then parses, the writer's resume check
    and the flows' cache keys only need the digest. Without ``keep`` a pass holds one ``chunk`` at a time."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    with fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            size += len(block)
            if keep:
                chunks.append(block)
    return Hashed(b"".join(chunks), digest.hexdigest(), size)


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 1 << 20) -> str:
    return read_hashed(fs, path, keep=False, chunk=chunk).sha256


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


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def local_path(url: str) -> str | None:
    """The OS path for a local URL, or None for a remote one."""
    fs, path = get_fs(url)
    return os.fspath(path) if is_local(fs) else None


STAGING_MARK = ".staging-"
RETIRED_MARK = ".old-"  # the previous output, moved aside while the new one is swapped in


def _retired_name(name: str) -> str:
    return f".{name}{RETIRED_MARK}{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def staged_folder(url: str, **storage_options: Any) -> Iterator[str]:
    """Write a whole output folder under a hidden sibling, and swap it in only when the block succeeds.

    A failed or killed run leaves the previous output complete and readable (the staging folder is removed,
    or swept by the next run), where writing in place would have deleted the old set first. Locally the
    swap is two renames; object stores have no folder rename, so there files are moved with the manifest
    (``_``-prefixed names) last, after the old folder's manifest went first.
    """
    head, _, name = str(url).rstrip("/").rpartition("/")
    head = head or "."
    fs, parent = get_fs(head, **storage_options)
    fs.makedirs(parent, exist_ok=True)
    _sweep_staging(fs, parent, name)
    final = get_fs(f"{head}/{name}", **storage_options)[1]
    local = local_path(url) is not None
    # A mount point (a container volume, a bind mount) cannot be renamed away, and its parent is another device:
    # stage inside it and swap its contents instead.
    inside = local and os.path.ismount(final)
    staging_url = f"{head}/{name}/" if inside else f"{head}/"
    staging_url += f".{name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"
    staging = get_fs(staging_url, **storage_options)[1]
    if inside:
        _sweep_staging(fs, final, name)
    try:
        yield staging_url
        if inside:
            _swap_contents(staging, final)
        else:
            _swap_in(fs, staging, final, local=local)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(staging):
                fs.rm(staging, recursive=True)
        raise


def _sweep_staging(fs: fsspec.AbstractFileSystem, folder: str, name: str) -> None:
    """Remove the staging folders a killed run left in ``folder``."""
    for stale in fs.ls(folder, detail=False):
        if stale.rstrip("/").rsplit("/", 1)[-1].startswith((f".{name}{STAGING_MARK}", f".{name}{RETIRED_MARK}")):
            fs.rm(stale, recursive=True)


def _is_manifest(entry: str) -> bool:
    """Sort key: the manifest (a ``_``-prefixed name) goes last into a set and first out of one."""
    return entry.rsplit("/", 1)[-1].startswith("_")


def _swap_contents(staging: str, final: str) -> None:
    """Replace what a mount point holds with what ``staging`` (inside it) holds.

    Not one rename, so the order carries the guarantee: the old manifest leaves first (the old set stops
    looking complete before it changes) and the new manifest arrives last."""
    name = os.path.basename(final.rstrip("/"))
    retired = os.path.join(final, _retired_name(name))
    os.mkdir(retired)
    keep = {os.path.basename(staging), os.path.basename(retired)}
    old = [e for e in os.listdir(final) if e not in keep]
    for entry in sorted(old, key=lambda e: not _is_manifest(e)):
        os.rename(os.path.join(final, entry), os.path.join(retired, entry))
    for entry in sorted(os.listdir(staging), key=_is_manifest):
        os.rename(os.path.join(staging, entry), os.path.join(final, entry))
    os.rmdir(staging)
    shutil.rmtree(retired, ignore_errors=True)


def _swap_in(fs: fsspec.AbstractFileSystem, staging: str, final: str, *, local: bool) -> None:
    if local:
        retired = f"{os.path.dirname(final)}/{_retired_name(os.path.basename(final))}"
        if os.path.exists(final):
            os.rename(final, retired)
        os.rename(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
        return
    if fs.exists(final):
        for entry in sorted(fs.find(final), key=lambda p: not _is_manifest(p)):
            fs.rm(entry)  # manifest first: the old set stops looking complete before it changes
    for entry in sorted(fs.find(staging), key=_is_manifest):
        fs.mv(entry, final + entry[len(staging) :])  # manifest last: complete only when it is
    with contextlib.suppress(FileNotFoundError):
        fs.rm(staging, recursive=True)


# ------------------------------------------------------------------------------------------ outputs vs inputs
def _location(url: str) -> tuple[str, tuple[str, ...]]:
    """(filesystem, path parts) with symlinks and '..' resolved locally, so two spellings of a folder compare equal."""
    local = local_path(url)
    if local is not None:
        return "file", tuple(p for p in os.path.realpath(local).split(os.sep) if p)
    fs, path = get_fs(url)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, tuple(p for p in path.split("/") if p and p != ".")


def _relation(a: tuple[str, tuple[str, ...]], b: tuple[str, tuple[str, ...]]) -> str | None:
    """How location ``a`` lies relative to location ``b``: 'is', 'inside', 'contains', or None when apart."""
    (fs_a, parts_a), (fs_b, parts_b) = a, b
    if fs_a != fs_b:
        return None
    if parts_a == parts_b:
        return "is"
    if parts_a[: len(parts_b)] == parts_b:
        return "inside"
    if parts_b[: len(parts_a)] == parts_a:
        return "contains"
    return None


RELATION_WORDS = {"is": "is the same path as", "inside": "lies inside", "contains": "contains"}


def _located(paths: dict[str, str | None]) -> list[tuple[str, str, tuple[str, tuple[str, ...]]]]:
    """(setting, path, location) for the paths that are set, each resolved once."""
    return [(key, url, _location(url)) for key, url in paths.items() if url]


def overlaps(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> list[str]:
    """Every output that is, contains or lies inside an input, as a sentence naming both settings.

    Writing such an output would replace, delete or mix into what the run reads."""
    sources = _located(inputs)
    return [
        f"{out_key} ({out}) {RELATION_WORDS[relation]} {in_key} ({src})"
        for out_key, out, out_at in _located(outputs)
        for in_key, src, src_at in sources
        if (relation := _relation(out_at, src_at))
    ]


def collisions(paths: dict[str, str | None]) -> list[str]:
    """Every pair of these paths (in key order) that is the same path or nests, as a sentence naming both."""
    located = _located(dict(sorted(paths.items())))
    return [
        f"{a_key} ({a}) {RELATION_WORDS[relation]} {b_key} ({b})"
        for i, (a_key, a, a_at) in enumerate(located)
        for b_key, b, b_at in located[i + 1 :]
        if (relation := _relation(a_at, b_at))
    ]


# What diffx writes into an output folder: a folder holding anything else is somebody's data, not a rerun's.
OWN_SUFFIXES = {
    "shards": (".parquet", ".json"),
    "model": (".json", ".safetensors"),
    "folder": (".json", ".safetensors", ".parquet", ".csv", ".png", ".html", ".jsonl", ".css", ".js"),
}


def foreign_content(url: str, kind: str, *, limit: int = 10_000) -> str | None:
    """Why the existing ``url`` is not an output of this kind that diffx wrote (a file where a folder goes,
    a folder of other files), or None when it is absent, empty or ours. Hidden names (staging, leases) are ours."""
    fs, path = get_fs(url)
    if not fs.exists(path):
        return None
    if kind == "file":
        return "it is a folder, where a file goes" if fs.isdir(path) else None
    if not fs.isdir(path):
        return "it is a file, where a folder goes"
    if kind not in OWN_SUFFIXES:  # a folder another tool fills (great_expectations' data docs)
        return None
    suffixes = OWN_SUFFIXES[kind]
    for seen, entry in enumerate(fs.find(path)):
        relative = entry[len(path.rstrip("/")) + 1 :]
        if seen >= limit:
            break
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        if not relative.endswith(suffixes):
            return f"it holds {relative}, which diffx does not write there"
    return None

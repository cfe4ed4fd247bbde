"""Caption cache keyed by (image digest, backend, model, prompt): reruns never recompute a caption.

SQLite (stdlib, one file, atomic commits) so a killed captioning run keeps everything it finished, and
several stages or processes can read it. The key hashes the *pixels' bytes* as stored, so re-ingesting the
same data hits the cache while any change to an image, the model or the prompt misses it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from pathlib import Path

from diffx.data.sample import Sample

log = logging.getLogger(__name__)


def image_digest(sample: Sample) -> str:
    digest = hashlib.sha256()
    for name in sorted(sample.images):
        digest.update(name.encode())
        digest.update(hashlib.sha256(sample.images[name].data).digest())
    return digest.hexdigest()


def cache_key(sample: Sample, source: str, model: str, prompt: str, layout: str) -> str:
    parts = [image_digest(sample), source, model, hashlib.sha256(prompt.encode()).hexdigest(), layout]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class CaptionCache:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._db: sqlite3.Connection | None = None
        self.set_aside: Path | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open(self.path)
            except sqlite3.DatabaseError as err:  # not a database, or not ours: a cache is never worth a failed run
                self.set_aside = self.path.with_name(f"{self.path.name}.unreadable-{uuid.uuid4().hex[:8]}")
                self.path.rename(self.set_aside)
                log.warning(
                    "caption cache %s cannot be read (%s); set aside as %s, rebuilding", path, err, self.set_aside
                )
                self._db = self._open(self.path)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS captions (key TEXT PRIMARY KEY, caption TEXT NOT NULL)")
            db.execute("SELECT key, caption FROM captions LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get_many(self, keys: list[str]) -> dict[str, str]:
        if self._db is None or not keys:
            self.misses += len(keys)
            return {}
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, caption FROM captions WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update(rows)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, str]) -> None:
        if self._db is None or not items:
            return
        with self._db:  # one transaction: all of a batch or none
            self._db.executemany("INSERT OR REPLACE INTO captions (key, caption) VALUES (?, ?)", items.items())

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

"""The review queue: captions refine flagged that no human decision has resolved yet.

Refine writes it; ``diffx review``, the Prefect review flow and the captions gate read it. It lives apart from
refine so that its readers do not import the whole captioning stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from diffx import fsio
from diffx.errors import DataError


@dataclass
class QueueItem:
    id: str
    split: str
    caption: str
    caption_source: str
    reviewed: str  # digest of the caption shown, for the decision to quote back
    flags: list[str]
    original: str | None = None


def read_queue(path: str) -> list[QueueItem]:
    """The queue's items; a missing file is an empty queue, a garbled line an error naming it."""
    fs, local = fsio.get_fs(path)
    if not fs.exists(local):
        return []
    with fs.open(local, "rb") as handle:
        raw = handle.read()
    items = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(QueueItem(**json.loads(line.decode("utf-8"))))
        except (ValueError, TypeError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise DataError(path, f"not a review-queue line written by refine ({err})", line=lineno) from None
    return items

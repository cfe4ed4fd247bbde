"""What a digest of settings leaves out, and the digest itself: provenance for everything a stage writes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from diffx.section import Section

OUTPUT_KEYS = frozenset(
    {"output", "report", "queue", "cache", "reports", "docs", "checkpoints", "metrics", "plots", "grid"}
)


SPEED_KEYS = frozenset({"workers", "read_ahead"})  # how many processes, or how far ahead they read: the same bytes


def section_hash(*sections: Section, extra: dict[str, Any] | None = None) -> str:
    """A short digest of the given sections (and ``extra`` values derived from others): provenance for
    everything a stage writes.

    Keys named in OUTPUT_KEYS are left out: where a result is written never changes what it is; nor does the
    number of processes that wrote it (SPEED_KEYS).
    """
    chosen: list[Any] = [extra] if extra else []
    for section in sections:
        dumped = section.model_dump(mode="json")  # recorded as a read of every key (diffx/section.py)
        chosen.append({k: v for k, v in dumped.items() if k not in OUTPUT_KEYS | SPEED_KEYS})
    text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Review decisions: an append-only JSON-lines log in git, re-applied deterministically by ``refine``.

One line per decision: ``{"id", "action": accept|edit|reject, "caption" (edit only), "reviewed" (sha256 of
the caption the reviewer saw), "reviewer", "at"}``. The last decision for an id wins, so a reviewer fixes a
mistake by deciding again; nothing is ever rewritten in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from diffx.errors import DataError

Action = Literal["accept", "edit", "reject"]
ACTIONS = ("accept", "edit", "reject")


def caption_digest(caption: str | None) -> str:
    return hashlib.sha256((caption or "").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    id: str
    action: Action
    reviewed: str
    caption: str | None = None
    reviewer: str = ""
    at: str = ""


def read_decisions(path: str | Path, known_ids: set[str] | None = None) -> dict[str, Decision]:
    """The effective decision per id; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return {}
    decisions: dict[str, Decision] = {}
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(str(path), f"not UTF-8 text (byte {err.start} of the line)", line=lineno) from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(str(path), f"not valid JSON ({err.msg})", line=lineno) from None
            if not isinstance(data, dict):
                raise DataError(str(path), "expected a JSON object per line", line=lineno)
            sample_id, action = data.get("id"), data.get("action")
            if not isinstance(sample_id, str) or not sample_id:
                raise DataError(str(path), "missing 'id'", line=lineno, field="id")
            if known_ids is not None and sample_id not in known_ids:
                raise DataError(str(path), f"unknown sample id {sample_id!r}", line=lineno, field="id")
            if action not in ACTIONS:
                raise DataError(
                    str(path), f"action {action!r}; expected one of {list(ACTIONS)}", line=lineno, field="action"
                )
            text = data.get("caption")
            if action == "edit" and (not isinstance(text, str) or not text.strip()):
                raise DataError(str(path), "an edit needs a non-empty 'caption'", line=lineno, field="caption")
            decisions[sample_id] = Decision(
                sample_id,
                action,
                str(data.get("reviewed", "")),
                " ".join(text.split()) if action == "edit" else None,
                str(data.get("reviewer", "")),
                str(data.get("at", "")),
            )
    return decisions


def append_decision(path: str | Path, decision: Decision) -> None:
    """Append one line and fsync: a decision once confirmed on screen is on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = asdict(decision)
    if not record["at"]:
        record["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    if record["caption"] is None:
        del record["caption"]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

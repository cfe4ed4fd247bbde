"""The terminal review loop: show each flagged caption with its image paths and flags, record a decision.

Input and output are passed in (``ask``/``say``), so the CLI wires them to the terminal, a test feeds
scripted answers, and the Prefect flow can use the same decision logic from its UI form.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffx import fsio
from diffx.caption.decisions import Decision, append_decision, read_decisions
from diffx.caption.queue import QueueItem, read_queue
from diffx.config import RefineConfig
from diffx.shards.reader import ShardSet

CHOICES = {"a": "accept", "e": "edit", "r": "reject", "s": "skip", "q": "quit"}


def export_images(item: QueueItem, shards: ShardSet, folder: Path) -> list[str]:
    """Write the sample's modalities as PNGs for the reviewer to open; returns their paths."""
    paths = []
    for record in shards.manifest.shards_of(item.split):
        for sample in shards.iter_samples_of(record):
            if sample.id == item.id:
                for name, image in sample.images.items():
                    path = folder / item.id / f"{name}.png"
                    fsio.write_bytes_atomic(str(path), image.data)
                    paths.append(str(path))
                return paths
    return paths


def review(
    options: RefineConfig,
    ask: Callable[[str], str],
    say: Callable[[str], None],
    *,
    reviewer: str = "",
    images: Path = Path("reviews/images"),
) -> dict[str, int]:
    """Walk the queue; every decision is appended (and fsynced) to the decisions file at once."""
    queue = read_queue(options.queue)
    already = read_decisions(options.decisions)
    shards = ShardSet(options.output)
    counts = {"accept": 0, "edit": 0, "reject": 0, "skip": 0}
    pending = [q for q in queue if q.id not in already or already[q.id].reviewed != q.reviewed]
    say(f"{len(pending)} caption(s) to review ({len(queue) - len(pending)} already decided, rerun refine to apply)")
    for number, item in enumerate(pending, start=1):
        say(f"\n[{number}/{len(pending)}] {item.id} ({item.split}), source {item.caption_source}")
        for path in export_images(item, shards, images):
            say(f"  image: {path}")
        for flag in item.flags:
            say(f"  flag: {flag}")
        say(f"  caption: {item.caption}")
        while True:
            answer = ask("[a]ccept, [e]dit, [r]eject, [s]kip, [q]uit").strip().lower()[:1]
            if answer in CHOICES:
                break
            say("  please answer a, e, r, s or q")
        action = CHOICES[answer]
        if action == "quit":
            break
        if action == "skip":
            counts["skip"] += 1
            continue
        text = None
        if action == "edit":
            text = " ".join(ask("new caption").split())
            if not text:
                say("  empty caption: skipped")
                counts["skip"] += 1
                continue
        append_decision(options.decisions, Decision(item.id, action, item.reviewed, text, reviewer))  # type: ignore[arg-type]
        counts[action] += 1
    return counts

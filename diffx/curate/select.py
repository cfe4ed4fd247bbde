"""Which scored samples are kept: threshold rules first, then the best share of each group.

Groups are a sample's main class (most planned boxes, ties to the lower class id; an empty layout its own
group), so keeping the best half of every group keeps the plan's class mix where a global top half would
keep the easy class and drop the hard one (the demo's bicycles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from diffx.config import CurateRulesConfig

BACKGROUND = "(no objects)"


@dataclass
class SampleScore:
    id: str
    group: str
    planned: int
    hits: int
    recall: float | None  # None without planned boxes
    outlier: float
    max_shift_px: int
    kept: bool = False
    reason: str = ""


def main_class(labels: list[int], classes: list[str]) -> str:
    if not labels:
        return BACKGROUND
    counts = {c: labels.count(c) for c in sorted(set(labels))}
    return classes[max(counts, key=lambda c: (counts[c], -c))]


def select(scores: list[SampleScore], rules: CurateRulesConfig) -> list[SampleScore]:
    """Marks ``kept`` and ``reason`` on every score (returned for chaining); the order is kept."""
    candidates = []
    for s in scores:
        if rules.min_recall is not None and s.recall is not None and s.recall < rules.min_recall:
            s.reason = f"recall {s.recall:.2f} < {rules.min_recall}"
        elif rules.max_outlier is not None and s.outlier > rules.max_outlier:
            s.reason = f"outlier {s.outlier:.2f} > {rules.max_outlier}"
        elif rules.max_shift_px is not None and s.max_shift_px > rules.max_shift_px:
            s.reason = f"RGB-X shift {s.max_shift_px} px > {rules.max_shift_px}"
        else:
            candidates.append(s)
    groups: dict[str, list[SampleScore]] = {}
    for s in candidates:
        groups.setdefault(s.group, []).append(s)
    for members in groups.values():
        # best first: most of the plan found, then most objects found, then the most typical; id breaks ties
        ranked = sorted(members, key=lambda s: (-(s.recall if s.recall is not None else 0.0), -s.hits, s.outlier, s.id))
        keep = math.ceil(rules.keep_share * len(ranked))
        for rank, s in enumerate(ranked):
            s.kept = rank < keep
            s.reason = "kept" if s.kept else f"rank {rank + 1} of {len(ranked)} in {s.group!r} (keep {keep})"
    return scores

"""Mixing recipes: which training sets a detector sees, and the gain over real-only with its uncertainty.

A recipe names how synthetic rows join the real training split (a seeded draw at a ratio, from every
generated row or from the curated ones; mixed into one run or used to pretrain before a real-only run).
Detector seeds pair the runs: seed s of a recipe is compared with seed s of real-only, so the interval is
on the per-seed difference (a Student-t 95 % interval over the seeds), which is what a team deciding
whether to add the shards needs, and what a single seed cannot give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from torch.utils.data import ConcatDataset, Dataset, Subset

from diffx.config import RecipeConfig
from diffx.metrics.coco_map import DetectionScores


def synthetic_draw(available: int, wanted: int, seed: int) -> list[int]:
    """``wanted`` row indices of ``available``: a seeded permutation, repeated whole when more are wanted."""
    if available == 0 or wanted == 0:
        return []
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    while len(rows) < wanted:
        rows += rng.permutation(available).tolist()
    return sorted(rows[:wanted])


@dataclass
class RecipeData:
    """The training sets of one recipe at one seed: ``pretrain`` is None for a mixed recipe."""

    train: Dataset
    pretrain: Dataset | None
    synthetic_rows: int


def recipe_datasets(recipe: RecipeConfig, reference: Dataset, synthetic: Dataset, seed: int) -> RecipeData:
    """``synthetic`` is the recipe's pool (every generated row, or the curated ones)."""
    wanted = max(1, round(recipe.ratio * len(reference)))  # type: ignore[arg-type]
    rows = synthetic_draw(len(synthetic), wanted, seed)  # type: ignore[arg-type]
    drawn = Subset(synthetic, rows)
    if recipe.mode == "pretrain_finetune":
        return RecipeData(train=reference, pretrain=drawn, synthetic_rows=len(rows))
    return RecipeData(train=ConcatDataset([reference, drawn]), pretrain=None, synthetic_rows=len(rows))


def interval95(values: list[float]) -> dict[str, float | None]:
    """Mean and the two-sided 95 % Student-t interval of the mean (None bounds for a single value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": round(mean, 4), "low": None, "high": None}
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4)}


def _ap(scores: DetectionScores, name: str | None) -> float | None:
    return scores.map50 if name is None else scores.per_class_ap50.get(name)


def gain_table(
    real: list[DetectionScores], recipes: dict[str, list[DetectionScores]], classes: list[str]
) -> dict[str, Any]:
    """Per recipe: mAP@0.5 per seed, and the paired gain over real-only (all classes, then each class)."""
    real_map = [s.map50 for s in real]
    table: dict[str, Any] = {"real": {"map50": interval95(real_map), "per_seed": real_map}}
    for name, runs in recipes.items():
        per_class = {}
        for cls in classes:
            pairs = [(_ap(r, cls), _ap(x, cls)) for r, x in zip(real, runs, strict=True)]
            if all(a is not None and b is not None for a, b in pairs):
                per_class[cls] = interval95([b - a for a, b in pairs])  # type: ignore[operator]
        table[name] = {
            "map50": interval95([s.map50 for s in runs]),
            "per_seed": [s.map50 for s in runs],
            "gain_map50": interval95([x.map50 - r.map50 for r, x in zip(real, runs, strict=True)]),
            "gain_map50_95": interval95([x.map50_95 - r.map50_95 for r, x in zip(real, runs, strict=True)]),
            "gain_ap50_per_class": per_class,
        }
    return table


def gains_csv(table: dict[str, Any]) -> str:
    """One row per recipe and class (``all`` first): what ``dvc plots`` draws as the gain chart."""
    lines = ["recipe,class,gain_map50,low,high"]
    for name, row in table.items():
        if name == "real":
            continue
        rows = [("all", row["gain_map50"]), *row["gain_ap50_per_class"].items()]
        for cls, g in rows:
            lines.append(
                f"{name},{cls},{g['mean']},{'' if g['low'] is None else g['low']},"
                f"{'' if g['high'] is None else g['high']}"
            )
    return "\n".join(lines) + "\n"

"""Mixing recipes: seeded draws of synthetic rows, the training sets they make, and paired gains."""

from __future__ import annotations

import pytest
from scipy import stats
from torch.utils.data import Dataset

from diffx.config import RecipeConfig, parse_config
from diffx.errors import ConfigError
from diffx.eval.recipes import gain_table, gains_csv, interval95, recipe_datasets, synthetic_draw
from diffx.metrics.coco_map import DetectionScores


class _Rows(Dataset):
    def __init__(self, tag: str, count: int):
        self.tag, self.count = tag, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> str:
        return f"{self.tag}{index}"


def test_a_draw_is_seeded_without_repeats_until_the_pool_is_spent() -> None:
    assert synthetic_draw(10, 4, seed=1) == synthetic_draw(10, 4, seed=1)
    assert synthetic_draw(10, 4, seed=1) != synthetic_draw(10, 4, seed=2)
    assert len(set(synthetic_draw(10, 10, seed=0))) == 10
    many = synthetic_draw(3, 7, seed=0)
    assert len(many) == 7 and {many.count(i) for i in range(3)} <= {2, 3}


def test_mixed_adds_the_ratio_and_pretrain_finetune_keeps_real_for_the_second_run() -> None:
    real, synthetic = _Rows("r", 8), _Rows("s", 20)
    mixed = recipe_datasets(RecipeConfig(name="m", ratio=0.5), real, synthetic, seed=0)
    rows = [mixed.train[i] for i in range(len(mixed.train))]
    assert mixed.pretrain is None and len(rows) == 12 and sum(r.startswith("s") for r in rows) == 4
    staged = recipe_datasets(RecipeConfig(name="p", ratio=2, mode="pretrain_finetune"), real, synthetic, seed=0)
    assert staged.train is real and len(staged.pretrain) == 16


def test_the_interval_is_students_t_on_the_seeds() -> None:
    values = [0.1, 0.2, 0.4]
    got = interval95(values)
    low, high = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert got["low"] == pytest.approx(low, abs=1e-4) and got["high"] == pytest.approx(high, abs=1e-4)
    assert interval95([0.3]) == {"mean": 0.3, "low": None, "high": None}


def _scores(map50: float, person: float) -> DetectionScores:
    return DetectionScores(map50, map50 / 2, {"person": person, "car": None})


def test_gains_are_paired_per_seed_and_per_class() -> None:
    real = [_scores(0.5, 0.4), _scores(0.7, 0.6)]
    recipe = [_scores(0.6, 0.4), _scores(0.8, 0.9)]  # +0.1 on both seeds, though seed 1 is the better seed
    table = gain_table(real, {"synthetic_1x": recipe}, ["person", "car"])
    gain = table["synthetic_1x"]["gain_map50"]
    assert gain["mean"] == pytest.approx(0.1) and gain["low"] == pytest.approx(0.1)  # paired: no seed noise
    assert table["synthetic_1x"]["gain_ap50_per_class"]["person"]["mean"] == pytest.approx(0.15)
    assert "car" not in table["synthetic_1x"]["gain_ap50_per_class"]  # no ground truth: no gain
    csv = gains_csv(table).splitlines()
    assert csv[0] == "recipe,class,gain_map50,low,high" and csv[1].startswith("synthetic_1x,all,0.1")


@pytest.mark.parametrize(
    "recipes, seeds, message",
    [
        ([{"name": "real"}], [0], "'real'"),
        ([{"name": "a"}, {"name": "a"}], [0], "unique"),
        ([{"name": "a"}], [0, 0], "repeats"),
    ],
)
def test_recipe_names_and_seeds_are_checked(recipes: list, seeds: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"evaluate": {"recipes": recipes, "detector_seeds": seeds}}, "params.yaml")

"""A small generation plan in a scratch folder, for the benchmarks that sample from the trained demo model."""

from __future__ import annotations

from typing import Any

from diffx.config import DiffxConfig, with_overrides
from diffx.data.spec import DatasetSpec
from diffx.sample.planner import read_plan
from diffx.stages import plan


def small_plan(
    base: DiffxConfig, folder: str, samples: int, **overrides: Any
) -> tuple[DiffxConfig, list[dict[str, Any]], DatasetSpec]:
    """Plan ``samples`` rows (one shard) under ``folder``; the config points generation at that plan."""
    config = with_overrides(
        base,
        {
            "plan.output": f"{folder}/plan.parquet",
            "plan.report": f"{folder}/plan.json",
            "plan.num_samples": samples,
            "plan.rows_per_shard": samples,
            "generate.plan": f"{folder}/plan.parquet",
            **overrides,
        },
    )
    plan.run(config)
    rows, spec, _ = read_plan(config.plan.output)
    return config, rows, spec

"""Stage ``plan``: what to generate, decided and written down before anything is generated.

Reads ``plan`` (and the layout slots of ``conditioning``, the scene word of ``caption.template``); the classes
and modalities come from the manifest of ``plan.source``. Writes the plan (a small Parquet file whose metadata
carries the dataset spec and the settings' digest) and its report. The planning itself is
:func:`diffx.sample.planner.plan_rows`.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.caption.scene import scene_noun
from diffx.config import ConditioningConfig, DiffxConfig, PlanConfig, TemplateCaptionConfig, section_hash
from diffx.sample.planner import PLAN_SCHEMA, plan_rows
from diffx.shards.reader import ShardSet
from diffx.stages.guard import guard

log = logging.getLogger(__name__)


def run(config: DiffxConfig) -> dict[str, Any]:
    guard("plan", config)
    return plan(config.plan, config.conditioning, config.caption.template)


def plan(
    options: PlanConfig, conditioning: ConditioningConfig, template: TemplateCaptionConfig | None = None
) -> dict[str, Any]:
    """Write the plan (Parquet) and its report; returns the report.

    The scene word of edited layouts' captions comes from ``template`` (the caption stage's, so a planned
    caption reads like an ingested one)."""
    spec = ShardSet(options.source).spec
    scene = scene_noun(spec.classes, template.scene if template else None)
    max_objects = conditioning.max_objects
    rows, counts = plan_rows(options, spec, max_objects, scene)
    table = pa.Table.from_pylist(rows, schema=PLAN_SCHEMA).replace_schema_metadata(
        {
            "diffx_plan": json.dumps(
                {
                    "dataset": spec.model_dump(mode="json"),
                    "rows_per_shard": options.rows_per_shard,
                    "source": None if options.layouts else options.source,
                    "params_hash": section_hash(options, extra={"max_objects": max_objects}),
                },
                sort_keys=True,
            )
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fsio.write_bytes_atomic(options.output, buffer.getvalue())
    report = {
        "rows": len(rows),
        "shards": rows[-1]["shard"] + 1,
        "edited": sum(r["edited"] for r in rows),
        **counts,
    }
    fsio.write_json_atomic(options.report, report)
    log.info(
        "planned %d samples in %d shards; per-sample objects %s",
        len(rows),
        report["shards"],
        report["per_sample_planned"],
    )
    return report

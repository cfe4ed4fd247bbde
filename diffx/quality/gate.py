"""Running a gate: statistics tables -> great_expectations checkpoints -> report, data docs, verdict.

A gate that fails raises :class:`GateFailed` *after* writing its report, so ``diffx check`` exits non-zero
(stopping ``dvc repro`` and failing a Prefect task) while the reader still gets every failed expectation,
the rows it failed on and the observed against the expected values. The JSON report holds no timings, so
an unchanged input gives a byte-identical report and DVC does not rerun what follows.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from diffx import fsio
from diffx.config import ConditioningConfig, QualityConfig
from diffx.errors import DataError, DiffxError
from diffx.models.text import token_limit
from diffx.quality import suites
from diffx.quality.stats import caption_table, review_table, sample_table, shard_table
from diffx.shards.reader import ShardSet

log = logging.getLogger(__name__)

GATES = ("ingest", "captions", "vae", "generated")


class GateFailed(DiffxError):
    """A quality gate found bad data; the message lists the failed expectations."""


@dataclass
class Outcome:
    table: str
    expectation: str
    column: str | None
    why: str
    success: bool
    expected: dict[str, Any]
    observed: Any = None
    unexpected_count: int = 0
    element_count: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        bounds = ", ".join(f"{k}={v}" for k, v in self.expected.items())
        text = f"{self.expectation}({target}{', ' + bounds if bounds else ''}): {self.why}"
        if self.unexpected_count:
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for r in self.rows)
            text += f" -- {self.unexpected_count} of {self.element_count} rows: {shown}"
        elif self.observed is not None:
            text += f" -- observed {self.observed}"
        return text


@dataclass
class GateReport:
    gate: str
    source: str
    rows: int
    outcomes: list[Outcome]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "source": self.source,
            "success": self.success,
            "rows": self.rows,
            "evaluated": len(self.outcomes),
            "failed": len(self.failures),
            "failures": [o.__dict__ for o in self.failures],
            "passed": sorted({f"{o.expectation}({o.table}.{o.column})" for o in self.outcomes if o.success}),
            **self.extra,
        }

    def headline(self) -> dict[str, Any]:
        """The verdict and its counts: what ``dvc metrics show`` lists (the full report is an output)."""
        failed = len(self.failures)
        return {"success": self.success, "rows": self.rows, "evaluated": len(self.outcomes), "failed": failed}


def _clean(value: Any) -> Any:
    """JSON-safe scalars (numpy types, NaN) for the report."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _new_context(docs: str | None) -> Any:
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    if docs:
        local = fsio.local_path(docs)
        if local is None:
            raise DataError(docs, "data docs are written to a local folder; set quality.docs to a local path or null")
        context.add_data_docs_site(
            site_name="diffx",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": local},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def validate_tables(
    gate: str, tables: dict[str, tuple[pd.DataFrame, list[Any], str]], *, docs: str | None, max_rows: int
) -> list[Outcome]:
    """Run each table's suite through a great_expectations checkpoint; one Outcome per expectation."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    context = _new_context(docs)
    source = context.data_sources.add_pandas(f"diffx-{gate}")
    outcomes: list[Outcome] = []
    for table_name, (frame, expectations, key) in tables.items():
        batch = source.add_dataframe_asset(table_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"diffx.{gate}.{table_name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{gate}-{table_name}", data=batch, suite=suite)
        )
        actions = [UpdateDataDocsAction(name="docs", site_names=["diffx"])] if docs else []
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{gate}-{table_name}",
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key]},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        for validation in result.run_results.values():
            for item in validation.results:
                config = item.expectation_config
                kwargs = {
                    k: _clean(v)
                    for k, v in config.kwargs.items()
                    if k not in ("batch_id", "column", "column_A", "column_B") and v is not None
                }
                column = config.kwargs.get("column") or (
                    f"{config.kwargs['column_A']} vs {config.kwargs['column_B']}"
                    if "column_A" in config.kwargs
                    else None
                )
                details = item.result or {}
                rows = []
                indices = details.get("unexpected_index_list") or []
                values = details.get("unexpected_list") or []
                for index, value in list(zip(indices, values, strict=False))[:max_rows]:
                    rows.append(
                        {key: _clean(index.get(key) if isinstance(index, dict) else index), "observed": _clean(value)}
                    )
                outcomes.append(
                    Outcome(
                        table=table_name,
                        expectation=config.type,
                        column=column,
                        why=(config.meta or {}).get("why", ""),
                        success=bool(item.success),
                        expected=kwargs,
                        observed=_clean(details.get("observed_value")),
                        unexpected_count=int(details.get("unexpected_count") or 0),
                        element_count=int(details.get("element_count") or len(frame)),
                        rows=rows,
                    )
                )
    return outcomes


# ------------------------------------------------------------------------------------------ gates
def _ingest_tables(
    quality: QualityConfig, conditioning: ConditioningConfig, data: str
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    shard_set = ShardSet(data)
    samples, reference = sample_table(shard_set, quality.ingest, workers=quality.workers)
    histogram_columns = [c for c in samples.columns if c.endswith("_hist_distance")]
    suite = suites.sample_suite(shard_set.spec, quality.ingest, conditioning.max_objects, histogram_columns)
    tables = {
        "samples": (samples, suite, "id"),
        "shards": (shard_table(shard_set), suites.shard_suite(), "shard"),
    }
    means = {m.name: round(float(samples[f"{m.name}_mean"].mean()), 6) for m in shard_set.spec.modalities}
    extra = {
        "reference_histograms": reference["histograms"],
        "reference_colour": reference["colour"],
        "reference_box_contrast": reference["box_contrast"],
        "reference_registration": reference["registration"],
        "reference_means": means,
    }
    return tables, len(samples), extra


def _generated_tables(
    quality: QualityConfig, conditioning: ConditioningConfig, data: str
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    cfg = quality.generated
    try:
        real = fsio.read_json(cfg.reference)
    except FileNotFoundError:
        raise DataError(cfg.reference, "the ingest gate's report (real-data references) is missing") from None
    shard_set = ShardSet(data)
    samples, _ = sample_table(
        shard_set,
        cfg,
        workers=quality.workers,
        reference={"histograms": real.get("reference_histograms", {}), "colour": real.get("reference_colour", {})},
    )
    histogram_columns = [c for c in samples.columns if c.endswith("_hist_distance")]
    contrast_columns = [f"{m}_box_contrast" for m in cfg.honoured if f"{m}_box_contrast" in samples.columns]
    suite = suites.generated_suite(
        shard_set.spec,
        cfg,
        conditioning.max_objects,
        histogram_columns,
        real.get("reference_means", {}),
        contrast_columns,
    )
    tables = {"samples": (samples, suite, "id"), "shards": (shard_table(shard_set), suites.shard_suite(), "shard")}
    honoured = {
        c: round(
            float(
                (
                    (samples[c] > 0)
                    if cfg.honoured[c.removesuffix("_box_contrast")] == "positive"
                    else (samples[c] < 0)
                ).mean()
            ),
            4,
        )
        for c in contrast_columns
    }
    return tables, len(samples), {"honoured_share": honoured}


def _caption_tables(
    quality: QualityConfig, conditioning: ConditioningConfig, data: str, queue: str | None = None
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Captions are counted with the UNet text encoder's own tokenizer against its limit (refine's too); the
    review queue refine wrote says how many flagged captions no human has resolved."""
    from diffx.caption.queue import read_queue
    from diffx.models.text import token_counter

    captions = caption_table(ShardSet(data), token_counter(conditioning.tokenizer()))
    suite = suites.caption_suite(quality.captions, token_limit(conditioning))
    tables: dict[str, Any] = {"captions": (captions, suite, "id")}
    if queue:
        pending = read_queue(queue)
        tables["review"] = (review_table(pending, len(captions)), suites.review_suite(quality.captions), "rows")
    return tables, len(captions), {}


def _vae_tables(
    quality: QualityConfig, conditioning: ConditioningConfig, data: str
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    try:
        metrics = fsio.read_json(data)
    except FileNotFoundError:
        raise DataError(data, "VAE metrics not found; run train_vae first") from None
    if not isinstance(metrics.get("val"), dict) or not metrics["val"]:
        raise DataError(data, "no per-modality validation scores ('val'); is this a train_vae metrics file?")
    rows = []
    for modality in sorted(metrics["val"]):  # one row per modality the model was trained on
        scores = metrics["val"][modality] or {}
        min_psnr, min_ssim = suites.vae_floors(quality.vae, modality)
        margin = quality.vae.min_gain_over_baseline_db
        baseline = scores.get("baseline_psnr")
        if margin is not None and baseline is None:
            raise DataError(
                data,
                f"val.{modality}.baseline_psnr missing: the gate compares with the latent-resolution baseline; "
                "rerun train_vae with this version, or set quality.vae.min_gain_over_baseline_db: null",
            )
        rows.append(
            {
                "modality": modality,
                "psnr": scores.get("psnr"),
                "ssim": scores.get("ssim"),
                "min_psnr": min_psnr,
                "min_ssim": min_ssim,
                "baseline_psnr": baseline,
                # with no margin the comparison is the floor itself, which the first expectation already holds
                "min_psnr_over_baseline": min_psnr if margin is None else round(float(baseline) + margin, 4),
            }
        )
    return {"reconstruction": (pd.DataFrame(rows), suites.vae_suite(), "modality")}, len(rows), {}


BUILDERS = {"ingest": _ingest_tables, "captions": _caption_tables, "vae": _vae_tables, "generated": _generated_tables}


def run_gate(
    gate: str,
    quality: QualityConfig,
    conditioning: ConditioningConfig,
    data: str,
    *,
    review_queue: str | None = None,
) -> GateReport:
    """Check ``data`` (the output of the stage the gate guards); write the report; raise on failure.

    ``conditioning`` holds the limits the UNet sets (layout slots, caption tokens), shared with refine;
    ``review_queue`` (captions gate) is refine's queue of flagged captions awaiting a human decision."""
    if gate not in BUILDERS:
        raise DiffxError(f"unknown gate {gate!r}; gates: {', '.join(GATES)}")
    started = time.perf_counter()
    inputs = {"queue": review_queue} if gate == "captions" else {}
    tables, rows, extra = BUILDERS[gate](quality, conditioning, data, **inputs)
    outcomes = validate_tables(gate, tables, docs=quality.docs, max_rows=quality.max_failed_rows_shown)
    report = GateReport(gate, data, rows, outcomes, extra)
    fsio.write_json_atomic(fsio.join(quality.reports, f"{gate}.json"), report.to_dict())
    fsio.write_json_atomic(fsio.join(quality.metrics, f"{gate}.json"), report.headline())
    log.info(
        "gate %s: %d expectations over %d rows, %d failed (%.1fs)",
        gate,
        len(outcomes),
        rows,
        len(report.failures),
        time.perf_counter() - started,
    )
    if not report.success:
        lines = "\n".join(f"  FAIL {o.line()}" for o in report.failures)
        raise GateFailed(
            f"quality gate {gate!r} failed on {data}: {len(report.failures)} of {len(outcomes)} "
            f"expectations\n{lines}\nreport: {fsio.join(quality.reports, gate + '.json')}"
        )
    return report

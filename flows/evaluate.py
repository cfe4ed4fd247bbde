"""Stage evaluate as its own flow: the metrics, then a Prefect artifact a reviewer can read at a glance."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from diffx.config import load_config
from flows.caching import evaluate_outputs, outputs_missing
from flows.tasks import evaluate_task


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """The headline table: downstream mAP, layout fidelity, alignment and realism per modality."""
    recipes = metrics["downstream"]["recipes"]
    seeds = len(metrics["downstream"]["seeds"])
    fidelity = metrics["layout_fidelity"]
    lines = [
        f"### Does synthetic data help the detector? (mAP@0.5 on real test data, {seeds} detector seeds)",
        "| trained on | mAP@0.5 (mean) | gain over real-only | 95 % interval |",
        "|---|---|---|---|",
        f"| real only | {recipes['real']['map50']['mean']:.3f} | | |",
    ]
    for name, row in recipes.items():
        if name == "real":
            continue
        gain = row["gain_map50"]
        lines.append(
            f"| {name} | {row['map50']['mean']:.3f} | {gain['mean']:+.3f} | "
            f"[{_num(gain['low'])}, {_num(gain['high'])}] |"
        )
    lines += [
        "",
        "### Layout fidelity (real-data detector, AP@0.5 against the planned boxes)",
        "| set | mAP@0.5 |",
        "|---|---|",
        *(f"| {name} | {scores['map50']:.3f} |" for name, scores in fidelity.items()),
        "",
        f"### Realism ({metrics['feature_extractor']})",
        "| set | modality | FID | KID | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, table in metrics["realism"].items():
        for modality, row in table.items():
            lines.append(
                f"| {name} | {modality} | {_num(row['fid'], 2)} | {_num(row['kid'], 4)} | "
                f"{_num(row['precision'], 2)} | {_num(row['recall'], 2)} |"
            )
    return "\n".join(lines)


@flow(name="diffx-evaluate", log_prints=True)
def evaluate_flow(params: str = "params.yaml") -> dict[str, Any]:
    config = load_config(params)
    metrics = evaluate_task.with_options(refresh_cache=outputs_missing(evaluate_outputs(config)))(config)
    create_markdown_artifact(metrics_markdown(metrics), key="evaluation")
    create_table_artifact(
        [
            {"set": name, "modality": modality, **scores}
            for name, table in metrics["alignment"].items()
            for modality, scores in table.items()
        ],
        key="cross-modal-alignment",
        description="RGB-X edge agreement; real pairs set what aligned means",
    )
    return metrics

"""The whole chain as one Prefect flow, calling the same library functions as ``dvc repro``.

ingest -> gate -> caption -> refine (-> review pause) -> gate -> train_vae -> gate -> train_unet -> plan ->
generate -> gate -> curate -> evaluate. A failed gate raises, so the flow run fails at that stage, as
``dvc repro`` stops there.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from diffx.config import load_config
from flows.caching import curate_outputs, outputs_missing
from flows.captions import caption_flow
from flows.evaluate import evaluate_flow
from flows.tasks import (
    curate_task,
    gate_task,
    generate_worker_task,
    ingest_task,
    plan_task,
    train_unet_task,
    train_vae_task,
)


@flow(name="diffx-chain", log_prints=True)
def chain_flow(params: str = "params.yaml", interactive_review: bool = False) -> dict[str, Any]:
    config = load_config(params)
    results: dict[str, Any] = {"ingest": ingest_task(config)}
    gate_task(config, "ingest")
    results["captions"] = caption_flow(params=params, interactive=interactive_review)
    results["train_vae"] = train_vae_task(config)
    gate_task(config, "vae")
    results["train_unet"] = train_unet_task(config)
    results["plan"] = plan_task(config)
    results["generate"] = generate_worker_task(config, 0, 1)
    results["gate_generated"] = gate_task(config, "generated")["success"]
    results["curate"] = curate_task.with_options(refresh_cache=outputs_missing(curate_outputs(config)))(config)
    results["evaluate"] = evaluate_flow(params=params)["downstream"]
    return results


@flow(name="diffx-retrain", log_prints=True)
def retrain_flow(params: str = "params.yaml") -> dict[str, Any]:
    """Weekly: retrain the MP-VAE and the UNet on the current captioned data, behind their gates."""
    config = load_config(params)
    vae = train_vae_task(config)
    gate_task(config, "vae")
    return {"train_vae": vae, "train_unet": train_unet_task(config)}

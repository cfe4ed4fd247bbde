"""Nightly generation: plan, shard work mapped over N workers, a final pass, and the gate.

Workers are Prefect tasks. Locally they run on threads; on a Ray cluster use :func:`on_ray` (prefect-ray's
RayTaskRunner; ``gpus_per_worker`` / ``cpus_per_worker`` become each worker's Ray resources). Each worker
loads the models once and takes the shards whose index % N is its rank; the final single-worker pass finds
every shard complete and writes the manifest (or finishes any shard a lost worker left behind). A Ray worker
that dies mid-shard is re-run by Ray and takes over the dead holder's shard lease at once, so the set comes
out byte-identical to the rank mode run with the same threads per worker.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from diffx.config import load_config
from flows.progress import ShardWatch, describe
from flows.tasks import gate_task, generate_worker_task, plan_task


@flow(name="diffx-generate", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=8))
def generate_flow(
    params: str = "params.yaml",
    num_samples: int | None = None,
    class_targets: dict[str, float] | None = None,
    model: str | None = None,
    output_url: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    progress_every_s: float = 10.0,
) -> dict[str, Any]:
    """Generate ``num_samples`` synthetic samples into ``output_url`` (any fsspec URL) with ``workers`` workers.

    ``gpus_per_worker`` and ``cpus_per_worker`` apply on Ray (see :func:`on_ray`); thread workers ignore them.
    The progress artifact moves as each shard lands (checked every ``progress_every_s`` seconds)."""
    overrides = {
        "plan.num_samples": num_samples,
        "plan.class_targets": class_targets,
        "generate.unet": model,
        "generate.output": output_url,
    }
    # one validated load: a flow parameter can never skip a check (num_samples=-5 fails here)
    config = load_config(params, overrides={k: v for k, v in overrides.items() if v is not None})
    logger = get_run_logger()
    planned = plan_task(config)
    watch = ShardWatch(config.generate)  # before the workers start: what they make counts toward samples/s
    with _worker_resources(cpus_per_worker, gpus_per_worker):
        futures = generate_worker_task.map(
            config=unmapped(config), rank=list(range(workers)), world_size=unmapped(workers)
        )
    state = watch.poll()
    progress = create_progress_artifact(state["percent"], key="generation-progress", description=describe(state))
    pending = list(futures)
    while pending:
        pending = list(wait(pending, timeout=progress_every_s).not_done)
        state = watch.poll()
        update_progress_artifact(progress, state["percent"], description=describe(state))
        logger.info("generation: %s", describe(state))
    reports: list[dict[str, Any]] = []
    for rank, future in enumerate(futures):
        try:
            reports.append(future.result())
        except Exception as err:  # a lost worker (its retries spent): the final pass redoes its shards
            logger.warning("generation worker %d failed (%s); the final pass finishes its shards", rank, err)
            reports.append({"samples_generated": 0, "failed": f"{type(err).__name__}: {err}"})
    final = generate_worker_task(config, 0, 1)  # finishes anything left and writes the manifest
    state = watch.poll()
    update_progress_artifact(progress, state["percent"], description=describe(state))
    logger.info(
        "generated %d samples with %d workers; set complete: %s",
        sum(r["samples_generated"] for r in reports),
        workers,
        final["complete"],
    )
    create_table_artifact(
        [{"rank": i, **r} for i, r in enumerate(reports)],
        key="generation-workers",
        description="per-worker generation report",
    )
    gate = gate_task(config, "generated")
    create_markdown_artifact(
        f"**{config.plan.num_samples}** samples planned (objects per sample "
        f"{planned['per_sample_planned']}) into `{config.generate.output}`; gate passed: "
        f"**{gate['success']}**",
        key="generation-summary",
    )
    return {"plan": planned, "workers": reports, "final": final, "gate": gate["success"]}


def _worker_resources(cpus: float, gpus: float) -> contextlib.AbstractContextManager[Any]:
    """Ray resources for the worker tasks submitted inside; nothing on other task runners."""
    try:
        from prefect_ray import RayTaskRunner
        from prefect_ray.context import remote_options
    except ImportError:  # without the ray extra no flow can run on Ray
        return contextlib.nullcontext()
    context = FlowRunContext.get()
    if context is None or not isinstance(context.task_runner, RayTaskRunner):
        return contextlib.nullcontext()
    return remote_options(num_cpus=cpus, num_gpus=gpus)


def on_ray(address: str | None = None) -> Any:
    """The same flow with its workers on a Ray cluster, e.g.
    ``on_ray("ray://head:10001")(num_samples=200_000, workers=16, gpus_per_worker=1)``.

    ``address``: ``ray://host:10001`` (Ray Client), ``host:6379`` (from a node of the cluster), or None for a
    local Ray started by prefect-ray. Needs the ``ray`` extra (``pip install -e ".[ray]"``) on the driver and
    the workers, with diffx and flows importable there (the same checkout or image).
    """
    from prefect_ray import RayTaskRunner

    return generate_flow.with_options(task_runner=RayTaskRunner(address=address))

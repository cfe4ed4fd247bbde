"""Prefect tasks: one per diffx stage, each a thin call into the library.

Training and generation are never cached by Prefect (their own checkpoints and shard skipping make
reruns cheap, and DVC decides what is stale); the evaluation is cached on its inputs (flows/caching.py).
I/O-bound stages retry on transient errors; gates never retry: a failed gate is an answer, not an accident.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from diffx import stages
from diffx.config import DiffxConfig
from flows.caching import curate_cache_key, evaluate_cache_key


@task(name="ingest", retries=2, retry_delay_seconds=10)
def ingest_task(config: DiffxConfig) -> dict[str, Any]:
    return stages.ingest.run(config, progress=False).report()


@task(name="gate", retries=0)
def gate_task(config: DiffxConfig, gate: str) -> dict[str, Any]:
    return stages.check.run(gate, config).to_dict()


@task(name="caption", retries=2, retry_delay_seconds=10)
def caption_task(config: DiffxConfig) -> dict[str, Any]:
    return stages.caption.run(config, progress=False).report()


@task(name="refine", retries=0)
def refine_task(config: DiffxConfig) -> dict[str, Any]:
    return stages.refine.run(config).report()


@task(name="train-vae", retries=0)
def train_vae_task(config: DiffxConfig) -> dict[str, Any]:
    return stages.train_vae.run(config, progress=False).metrics


@task(name="train-unet", retries=0)
def train_unet_task(config: DiffxConfig) -> dict[str, Any]:
    return stages.train_unet.run(config, progress=False).metrics


@task(name="plan", retries=0)
def plan_task(config: DiffxConfig) -> dict[str, Any]:
    return stages.plan.run(config)


@task(name="generate-worker", retries=3, retry_delay_seconds=5)
def generate_worker_task(config: DiffxConfig, rank: int, world_size: int) -> dict[str, Any]:
    """One worker: loads the models once, takes the shards whose index % world_size == rank.

    Retrying is safe: complete shards are skipped, and a half-written one never has its final name.
    """
    return stages.generate.run(config, rank=rank, world_size=world_size, progress=False).report()


def _scored_on_shards(name: str, cache_key_fn: Any) -> Any:
    """A stage that scores shard sets: cached on its inputs (flows/caching.py), never retried (it resumes from its
    own checkpoints, so a retry would only repeat the answer), its result persisted as JSON. log_prints=False:
    pycocotools prints its 12-line table for every score; our own progress goes through logging."""
    return task(
        name=name,
        retries=0,
        cache_key_fn=cache_key_fn,
        persist_result=True,
        result_serializer="json",
        log_prints=False,
    )


@_scored_on_shards("curate", curate_cache_key)
def curate_task(config: DiffxConfig) -> dict[str, Any]:
    """Cached on its params, the evaluation's (its detector and features), and the real and synthetic sets."""
    return stages.curate.run(config, progress=False).report


@_scored_on_shards("evaluate", evaluate_cache_key)
def evaluate_task(config: DiffxConfig) -> dict[str, Any]:
    """Cached on its params and the digests of the real and synthetic shard sets (flows/caching.py).

    Resumable by itself (detector checkpoints), so a retry would only repeat the same answer.
    """
    return stages.evaluate.run(config, progress=False).metrics

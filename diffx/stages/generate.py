"""Stage ``generate``: execute a plan into synthetic Parquet shards, resumably and in parallel.

Reads ``generate``; what to draw comes from the plan (and its dataset spec), how from the self-contained model
folder. A worker skips a shard already complete for its key, takes the shard's lease before generating it (so
two workers never race on a shard) and writes it under a temporary name renamed when complete: a SIGKILL at any
moment leaves either nothing or a complete shard, and the manifest is written only once every planned shard is
complete (:class:`diffx.shards.resume.PlannedShardSet`). Scale-out: ``--rank/--world-size`` gives worker r the
shards with index % world_size == r (Slurm, Kubernetes, torchrun); any number of such workers, started in any
order, converge on the same set.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from diffx import fsio
from diffx.config import DiffxConfig, GenerateConfig
from diffx.errors import ConfigError, DataError
from diffx.progress import Progress
from diffx.sample.generate import PlanExecutor, planned_shards, shard_keys
from diffx.shards.resume import PlannedShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages.guard import guard

log = logging.getLogger(__name__)


def run(config: DiffxConfig, **kwargs: Any) -> GenerateResult:
    guard("generate", config)
    return generate(config.generate, **kwargs)


@dataclass
class GenerateResult:
    output: str
    shards_done: int = 0
    shards_skipped: int = 0
    shards_busy: int = 0
    samples: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    encode_seconds: float = 0.0
    complete: bool = False
    shard_seconds: list[float] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "complete": self.complete,
            "shards_generated": self.shards_done,
            "shards_skipped_complete": self.shards_skipped,
            "shards_locked_by_others": self.shards_busy,
            "samples_generated": self.samples,
            "samples_per_second": round(self.samples / self.seconds, 3) if self.seconds else None,
            "model_share": round(self.model_seconds / self.seconds, 3) if self.seconds else None,
        }


def generate(options: GenerateConfig, *, rank: int = 0, world_size: int = 1, progress: bool = True) -> GenerateResult:
    """What to draw comes from the plan (and its dataset spec); how, from the self-contained model folder."""
    started = time.perf_counter()
    if not 0 <= rank < world_size:
        raise ConfigError(f"--rank {rank} is outside --world-size {world_size}")
    by_shard, spec = planned_shards(options)
    if not by_shard:  # an empty set would look complete and feed nothing downstream
        raise DataError(options.plan, "the plan has no rows; nothing to generate (see plan.num_samples / plan.mode)")
    executor = PlanExecutor(options, spec)  # refuses a model/plan mismatch before any work
    crowded = next(
        (r for rows in by_shard.values() for r in rows if len(r["objects"] or []) > executor.max_objects), None
    )
    if crowded is not None:
        raise DataError(
            options.plan,
            f"row id {crowded['id']!r} has {len(crowded['objects'])} objects; the model has "
            f"{executor.max_objects} layout slots",
            field="objects",
        )
    # provenance by content: the models' digest and the sampler (paths to the plan or models are not content)
    content_hash = hashlib.sha256(f"{executor.model_id}{sorted(executor.sampler.items())}".encode()).hexdigest()[:16]
    writer = ShardSetWriter(options.output, spec, generated=True, params_hash=content_hash)
    result = GenerateResult(options.output)
    mine = [s for s in sorted(by_shard) if s % world_size == rank]
    shard_set = PlannedShardSet(  # retires shards the plan no longer has, and a manifest for another plan
        writer, options.split, shard_keys(by_shard, executor.model_id, executor.sampler), options.lease_seconds
    )
    bar = Progress(
        f"generate (rank {rank}/{world_size})", sum(len(by_shard[s]) for s in mine), unit="samples", bar=progress
    )
    for index in mine:
        with shard_set.claim(index) as claim:
            if claim.status == "current":
                result.shards_skipped += 1
                bar.skip(len(by_shard[index]))
            elif claim.status == "busy":
                result.shards_busy += 1
            else:
                tick = time.perf_counter()
                samples = executor.shard(by_shard[index])
                claim.write(samples)
                result.shards_done += 1
                result.samples += len(samples)
                result.shard_seconds.append(time.perf_counter() - tick)
                bar.update(len(samples), shard=index)
    bar.close()
    result.model_seconds, result.encode_seconds = executor.model_seconds, executor.encode_seconds
    result.complete = shard_set.complete()
    result.seconds = time.perf_counter() - started
    fsio.write_json_atomic(options.report, result.report())
    log.info(
        "generate rank %d/%d: %d shards generated, %d already complete, %d locked elsewhere; %s",
        rank,
        world_size,
        result.shards_done,
        result.shards_skipped,
        result.shards_busy,
        "shard set complete" if result.complete else "shard set not complete yet",
    )
    return result

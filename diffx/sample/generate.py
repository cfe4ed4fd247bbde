"""Stage ``generate``: execute a plan into synthetic Parquet shards, resumably and in parallel.

A shard is a pure function of (plan rows, model digest, sampler settings), named by its index and keyed by
a plan key that hashes exactly that. A worker skips a shard whose file and sidecar record are complete
for the same key, takes an exclusive lock before generating one (so two workers never race on a shard),
and writes it under a temporary name renamed when complete: a SIGKILL at any moment leaves either
nothing or a complete shard. The manifest is written only once every planned shard is complete (the locks,
stale-shard retirement and completion live with the shard writer, in diffx/shards/resume.py).
Scale-out: ``--rank/--world-size`` gives worker r the shards with index % world_size == r (Slurm,
Kubernetes, torchrun); any number of such workers, started in any order, converge on the same set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffx import fsio
from diffx.config import GenerateConfig
from diffx.data.images import EncodedImage, decode_array
from diffx.data.layout_tensors import stored_to_tensor
from diffx.data.parallel import resolve_workers
from diffx.data.png import encode_png_fast
from diffx.data.sample import BoxObject, Sample
from diffx.data.spec import DatasetSpec, require_compatible
from diffx.errors import ConfigError, DataError
from diffx.models.folder import ModelFolder, load_pretrained
from diffx.models.mpvae import MPVAE
from diffx.models.text import TextEncoder
from diffx.models.unet import DiffXUNet
from diffx.progress import Progress
from diffx.sample.pipeline import DiffXPipeline, LayoutRequest, autocast
from diffx.sample.planner import read_plan
from diffx.shards.resume import complete_set, is_current, retire_stale, shard_lock
from diffx.shards.writer import ShardSetWriter

log = logging.getLogger(__name__)
_LOAD_LOCK = threading.Lock()  # workers in one process (Prefect's thread runner) load models one after another


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


def model_digest(folder: ModelFolder) -> str:
    """Content of every weight and config file of the model folder (its VAE and schedule included)."""
    digest = hashlib.sha256()
    for file in folder.files():
        digest.update(file.relative_to(folder.root).as_posix().encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def plan_key(rows: list[dict[str, Any]], model_id: str, sampler: dict[str, Any]) -> str:
    rows = [  # a dense map enters by its digest: the key stays small and still changes with every pixel
        {**r, "layout": hashlib.sha256(r["layout"]).hexdigest()} if r.get("layout") is not None else r for r in rows
    ]
    text = json.dumps({"rows": rows, "model": model_id, "sampler": sampler}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _to_png(array: np.ndarray, bit_depth: int, source: str, level: int) -> EncodedImage:
    values = np.clip(array, 0.0, 1.0)
    if values.shape[0] == 3:
        return encode_png_fast((values.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), source, level)
    if bit_depth == 16:
        return encode_png_fast((values[0] * 65535 + 0.5).astype(np.uint16), source, level)
    return encode_png_fast((values[0] * 255 + 0.5).astype(np.uint8), source, level)


class PlanExecutor:
    """Models loaded once per worker; ``shard`` turns one shard's plan rows into samples."""

    def __init__(self, options: GenerateConfig, spec: DatasetSpec):
        folder = ModelFolder(options.unet)
        card = folder.card
        # the plan must describe exactly what the model was trained on: refuse before any work
        require_compatible(spec, card.dataset, found_in=options.plan, needed_by=f"the model {options.unet}")
        require_compatible(card.dataset, spec, found_in=options.unet, needed_by=f"the plan {options.plan}")
        self.device = torch.device(
            "cuda"
            if options.device == "auto" and torch.cuda.is_available()
            else "cpu"
            if options.device == "auto"
            else options.device
        )
        self.spec, self.options = spec, options
        self.max_objects = card.max_objects
        with _LOAD_LOCK:  # from_pretrained patches torch globally (meta-device init): one load at a time
            vae = load_pretrained(MPVAE, folder.vae, "MP-VAE").to(self.device)
            unet = load_pretrained(DiffXUNet, options.unet, "DiffX-UNet").to(self.device)
            text = TextEncoder(
                card.text_encoder,
                max_tokens=card.max_tokens,
                tokenizer=card.text_tokenizer,
                device=self.device,
                mask_padding=card.mask_caption_padding,
            )
        if options.compile:
            # in place, so the pipeline keeps the module's attributes; shapes are fixed per batch size
            unet.compile(dynamic=False)
        self.pipeline = DiffXPipeline(vae, unet, text, spec, card.max_objects, folder.schedule(), self.device)
        self.model_id = model_digest(folder)
        self.sampler = options.sampler.model_dump()
        autocast(self.sampler["precision"], self.device)  # refuses fp16 without CUDA before any work
        # PNG encoding (zlib releases the GIL) runs on every core while the model draws the next batch
        self.encoder = ThreadPoolExecutor(max_workers=resolve_workers(options.workers))
        self.model_seconds = 0.0
        self.encode_seconds = 0.0  # summed over the encoding threads
        self._seconds_lock = threading.Lock()

    def _encode(self, row: dict[str, Any], images: dict[str, np.ndarray]) -> Sample:
        started = time.perf_counter()
        level = self.options.png_level
        encoded = {
            m.name: _to_png(images[m.name], m.bit_depth, f"{row['id']}:{m.name}", level) for m in self.spec.modalities
        }
        objects = [BoxObject(tuple(o["bbox"]), o["category"], int(o["category_id"])) for o in row["objects"]]
        layout = None
        if row.get("layout") is not None:  # the map the sample was drawn from, stored as planned
            layout = EncodedImage(row["layout"], f"{row['id']}:layout", int(row["width"]), int(row["height"]), "L")
        sample = Sample(
            row["id"],
            self.options.split,
            int(row["width"]),
            int(row["height"]),
            encoded,
            objects,
            layout=layout,
            caption=row["caption"],
            caption_source=row["caption_source"],
            provenance={
                "seed": int(row["seed"]),
                "source_id": row["source_id"],
                "model_id": self.model_id,
                "sampler": self.sampler["sampler"],
                "steps": self.sampler["steps"],
                "guidance": float(self.sampler["guidance"]),
            },
        )
        with self._seconds_lock:
            self.encode_seconds += time.perf_counter() - started
        return sample

    def _layout(self, row: dict[str, Any]) -> torch.Tensor | None:
        if row.get("layout") is None:
            return None
        return stored_to_tensor(decode_array(row["layout"], f"{self.options.plan} ({row['id']}) layout"), self.spec)

    def shard(self, rows: list[dict[str, Any]]) -> list[Sample]:
        pending: list[Future[Sample]] = []
        batch = self.options.batch_size
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            by_size: dict[tuple[int, int], list[int]] = {}
            for i, row in enumerate(chunk):
                by_size.setdefault((row["height"], row["width"]), []).append(i)
            images: dict[str, list[np.ndarray | None]] = {m: [None] * len(chunk) for m in self.spec.modality_names}
            tick = time.perf_counter()
            for (height, width), members in by_size.items():
                requests = [
                    LayoutRequest(
                        chunk[i]["caption"] or "",
                        torch.tensor([o["bbox"] for o in chunk[i]["objects"]], dtype=torch.float32).reshape(-1, 4),
                        torch.tensor([o["category_id"] for o in chunk[i]["objects"]], dtype=torch.long),
                        height,
                        width,
                        int(chunk[i]["seed"]),
                        self._layout(chunk[i]),
                    )
                    for i in members
                ]
                drawn = self.pipeline(
                    requests,
                    sampler=self.sampler["sampler"],
                    steps=self.sampler["steps"],
                    guidance=self.sampler["guidance"],
                    layout_guidance=self.sampler.get("layout_guidance"),
                    precision=self.sampler["precision"],
                )
                for name, tensor in drawn.items():
                    for k, i in enumerate(members):
                        images[name][i] = tensor[k].cpu().numpy()
            self.model_seconds += time.perf_counter() - tick
            for i, row in enumerate(chunk):
                pending.append(self.encoder.submit(self._encode, row, {k: v[i] for k, v in images.items()}))  # type: ignore[misc]
        return [future.result() for future in pending]


def planned_shards(options: GenerateConfig) -> tuple[dict[int, list[dict[str, Any]]], DatasetSpec]:
    """The plan's rows grouped by shard index, each shard's rows in plan order."""
    rows, spec, _ = read_plan(options.plan)
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_shard.setdefault(int(row["shard"]), []).append(row)
    for shard_rows in by_shard.values():
        shard_rows.sort(key=lambda r: r["row"])
    return by_shard, spec


def shard_keys(by_shard: dict[int, list[dict[str, Any]]], model_id: str, sampler: dict[str, Any]) -> dict[int, str]:
    return {index: plan_key(shard_rows, model_id, sampler) for index, shard_rows in by_shard.items()}


def expected_keys(options: GenerateConfig) -> tuple[dict[int, list[dict[str, Any]]], dict[int, str]]:
    """Planned shards and the key each will carry, without loading any model (a progress watcher's view)."""
    by_shard, _ = planned_shards(options)
    return by_shard, shard_keys(by_shard, model_digest(ModelFolder(options.unet)), options.sampler.model_dump())


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
    keys = shard_keys(by_shard, executor.model_id, executor.sampler)
    retire_stale(writer, options.split, keys)
    bar = Progress(
        f"generate (rank {rank}/{world_size})", sum(len(by_shard[s]) for s in mine), unit="samples", bar=progress
    )
    for index in mine:
        if is_current(writer, options.split, index, keys[index]):
            result.shards_skipped += 1
            bar.skip(len(by_shard[index]))
            continue
        with shard_lock(options.output, options.split, index, options.lease_seconds) as mine_now:
            if not mine_now:
                result.shards_busy += 1
                continue
            tick = time.perf_counter()
            samples = executor.shard(by_shard[index])
            writer.write_shard(options.split, index, samples, plan_key=keys[index])
            result.shards_done += 1
            result.samples += len(samples)
            result.shard_seconds.append(time.perf_counter() - tick)
            bar.update(len(samples), shard=index)
    bar.close()
    result.model_seconds, result.encode_seconds = executor.model_seconds, executor.encode_seconds
    result.complete = complete_set(writer, options.split, keys)
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

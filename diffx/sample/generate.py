"""Generation from a plan: the executor that turns planned rows into samples with the self-contained model folder.

A shard is a pure function of (plan rows, model digest, sampler settings): :func:`plan_key` hashes exactly that,
so the generate stage (diffx/stages/generate.py) can skip, resume and share shards through
:class:`diffx.shards.resume.PlannedShardSet`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from diffx.config import GenerateConfig
from diffx.data.images import EncodedImage, decode_array
from diffx.data.layout_tensors import stored_to_tensor
from diffx.data.parallel import resolve_workers
from diffx.data.png import encode_png_fast
from diffx.data.sample import BoxObject, Sample
from diffx.data.spec import DatasetSpec, require_compatible
from diffx.models.folder import ModelFolder, load_pretrained
from diffx.models.mpvae import MPVAE
from diffx.models.text import TextEncoder
from diffx.models.unet import DiffXUNet
from diffx.sample.pipeline import DiffXPipeline, LayoutRequest, autocast
from diffx.sample.planner import read_plan

log = logging.getLogger(__name__)
_LOAD_LOCK = threading.Lock()  # workers in one process (Prefect's thread runner) load models one after another


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

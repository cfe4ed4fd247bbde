"""The training machinery every diffx model shares: one loop for CPU, one GPU and many processes.

A subclass builds its model and says how to compute the loss of a micro-batch; this class owns the rest:
AdamW with warm-up + cosine, gradient accumulation and clipping, bf16 autocast on CUDA, EMA, DDP (gloo on
CPU, NCCL on GPUs), the NaN stop, safetensors checkpoints with optimizer/scheduler/EMA/RNG state and the
data position, resume, and the loss history for ``dvc plots``. Read ``run`` top to bottom like nanoGPT.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from diffx import fsio
from diffx.config import TrainLoopConfig
from diffx.errors import ConfigError, DiffxError
from diffx.progress import Progress
from diffx.shards.allocator import keep_freed_buffers, worker_init
from diffx.shards.dataset import detection_collate
from diffx.train.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from diffx.train.data import FRAME_CROP, BatchPlan, PlanSampler, StreamDataset, shard_rows_of
from diffx.train.distributed import DistContext
from diffx.train.ema import EMA

log = logging.getLogger(__name__)
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch has the fused AdamW kernel


class TrainingError(DiffxError):
    """Training cannot go on (a NaN loss); the message names the step and the last good checkpoint."""


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """Subclasses set ``model`` (what is saved) and implement ``loss``; then call ``setup``."""

    kind = "model"
    model: nn.Module

    def __init__(
        self, ctx: DistContext, train: TrainLoopConfig, checkpoints: str, run_key: str, *, progress: bool = True
    ):
        self.ctx, self.train_cfg, self.checkpoints, self.run_key = ctx, train, checkpoints, run_key
        self.progress = progress
        self.step = 0
        self.resumed_from = 0
        self.history: list[dict[str, float]] = []
        self.ddp: DistributedDataParallel | None = None

    # --------------------------------------------------------------------------------- to implement
    def loss(
        self, module: nn.Module, batch: dict[str, Any], positions: list[int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch; ``module`` is the model or its DDP wrapper (call that one)."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed (e.g. the modality list); checked on restore."""
        return {}

    # --------------------------------------------------------------------------------- set-up
    def setup(
        self,
        dataset: Dataset,
        trainable: list[nn.Parameter] | None = None,
        *,
        resume: bool = True,
        resume_from: str | None = None,
    ) -> None:
        cfg = self.train_cfg
        self.dataset = dataset
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        params = trainable if trainable is not None else [p for p in self.model.parameters() if p.requires_grad]
        ids = {id(p) for p in params}
        decay = [p for n, p in self.model.named_parameters() if id(p) in ids and p.ndim >= 2 and "norm" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if id(p) in ids and (p.ndim < 2 or "norm" in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.999),
            # one kernel over every tensor: on the demo UNet (11 M parameters, 2 CPU cores) torch's default
            # per-tensor loop takes 42 ms an optimizer step, the fused kernel 12 ms, results equal to an ulp
            # (benchmarks/demo_levers.py: unet_adamw_ms_per_step)
            fused=True if self.ctx.device.type in FUSED_ADAMW_DEVICES else None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule)
        )
        self.ema = EMA(self.model, cfg.ema_decay, params) if cfg.ema_decay else None
        self.plan = BatchPlan(
            len(dataset),  # type: ignore[arg-type]
            cfg.batch_size,
            cfg.grad_accum,
            self.ctx.world_size,
            cfg.seed,
            shard_rows=shard_rows_of(dataset) if cfg.shuffle == "shards" else (),
            shuffle_buffer=cfg.shuffle_buffer,
        )
        checkpoint = (
            load_checkpoint(resume_from) if resume_from else (latest_checkpoint(self.checkpoints) if resume else None)
        )
        if checkpoint is not None:
            self._restore(checkpoint, explicit=resume_from is not None)
        if self.ctx.distributed:
            self.ddp = DistributedDataParallel(self.model, find_unused_parameters=False)

    # --------------------------------------------------------------------------------- checkpoints
    def _meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_key": self.run_key,
            **self.identity(),
            "history": self.history,
            "ema_updates": self.ema.updates if self.ema else 0,
        }

    def _restore(self, checkpoint: Checkpoint, explicit: bool) -> None:
        meta = checkpoint.state["meta"]
        for key, wanted in self.identity().items():
            if meta.get(key) != wanted:
                raise ConfigError(
                    f"{checkpoint.path}: the checkpoint was trained for {key} {meta.get(key)}, "
                    f"the config asks for {wanted}"
                )
        if meta.get("run_key") != self.run_key:
            message = f"{checkpoint.path}: made with other params (run key {meta.get('run_key')}, now {self.run_key})"
            if explicit:
                raise ConfigError(message)
            log.warning("%s; starting from scratch", message)
            return
        self.model.load_state_dict(checkpoint.tensors("model"))
        self.optimizer.load_state_dict(checkpoint.nested("optimizer"))
        self.scheduler.load_state_dict(checkpoint.nested("scheduler"))
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint.tensors("ema"), int(meta.get("ema_updates", 0)))
        torch.set_rng_state(checkpoint.tensors("rng")["torch"])
        self.step = self.resumed_from = checkpoint.step
        self.history = list(meta.get("history", []))
        log.info("resumed from %s (step %d)", checkpoint.path, checkpoint.step)

    def save(self) -> Path | None:
        if not self.ctx.is_main:
            return None
        flat = {"model": self.model.state_dict(), "rng": {"torch": torch.get_rng_state()}}
        if self.ema is not None:
            flat["ema"] = self.ema.state_dict()
        return save_checkpoint(
            self.checkpoints,
            self.step,
            flat=flat,
            nested={"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            meta=self._meta(),
            keep=self.train_cfg.keep_checkpoints,
        )

    # --------------------------------------------------------------------------------- one step
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.ctx.device.type == "cuda" and self.train_cfg.mixed_precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        accum = self.train_cfg.grad_accum
        totals: dict[str, float] = {}
        finite = True
        module = self.ddp or self.model
        for micro, batch in enumerate(micro_batches):
            positions = self.plan.positions(self.step, micro, self.ctx.rank)
            sync = self.ddp is None or micro == accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():  # type: ignore[union-attr]
                loss, parts = self.loss(module, batch, positions)
                finite = finite and bool(torch.isfinite(loss))
                (loss / accum).backward()
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[key] = totals.get(key, 0.0) + value / accum
        if not self.ctx.all_true(finite):
            last = latest_checkpoint(self.checkpoints)
            raise TrainingError(
                f"step {self.step}: the loss is not finite ({', '.join(f'{k}={v:.4g}' for k, v in totals.items())}); "
                f"stopped without saving. Last good checkpoint: {last.path if last else 'none'}. "
                "Lower the learning rate or check the input data."
            )
        if self.train_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.train_cfg.grad_clip
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return totals

    def run_report(self, samples_per_second: float) -> dict[str, Any]:
        """How the run went (speed, processes, resume): a report beside the metrics, never a DVC metric,
        since it changes on every run while the model does not."""
        return {
            "steps": self.step,
            "resumed_from": self.resumed_from,
            "processes": self.ctx.world_size,
            "device": self.ctx.device.type,
            "train_samples_per_second": round(samples_per_second, 2),
        }

    def after_step(self) -> None:
        """Hook after every optimizer step on every rank (e.g. a preview grid every N steps)."""

    # --------------------------------------------------------------------------------- the loop
    def _batches(self, end: int) -> Iterator[dict[str, Any]]:
        sampler = PlanSampler(self.plan, self.ctx.rank, self.step, end)
        keep_freed_buffers()  # each item's buffers reused, not faulted in again (diffx/shards/allocator.py)
        loader = DataLoader(
            StreamDataset(self.dataset, self.plan, FRAME_CROP, self.train_cfg.read_ahead),
            batch_sampler=sampler,
            collate_fn=detection_collate,
            num_workers=self.train_cfg.num_workers,
            worker_init_fn=worker_init if self.train_cfg.num_workers else None,
        )
        return iter(loader)

    def run(self, until: int | None = None) -> float:
        """Train up to step ``until`` (default: the configured steps); returns samples per second."""
        cfg = self.train_cfg
        end = min(until or cfg.steps, cfg.steps)
        if self.step >= end:
            return 0.0
        batches = self._batches(end)
        progress = Progress(
            f"train {self.kind}",
            end,
            unit="steps",
            bar=self.progress,
            scale=cfg.batch_size,  # the global batch: every rank and micro-batch together
            rate_unit="samples",
            start=self.step,
            enabled=self.ctx.is_main,
        )
        started, first_step = time.perf_counter(), self.step
        self.model.train()
        while self.step < end:
            totals = self.train_step([next(batches) for _ in range(cfg.grad_accum)])
            if self.step % cfg.log_every == 0 or self.step == end:
                row = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], **totals}
                self.history.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save()
            self.after_step()
            progress.update(1, loss=totals["loss"])
        progress.close()
        self.ctx.barrier()
        return (self.step - first_step) * cfg.batch_size / max(time.perf_counter() - started, 1e-9)


def write_history_csv(path: str, history: list[dict[str, float]]) -> None:
    columns = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k != "loss", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    fsio.write_bytes_atomic(path, buffer.getvalue().encode())

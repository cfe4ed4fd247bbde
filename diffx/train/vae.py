"""Stage ``train_vae``: train the MP-VAE on canonical shards, on CPU, one GPU or many processes.

Read it top to bottom like nanoGPT: set-up, resume, the step loop, then the outputs. Launch with plain
``diffx train-vae`` (one process) or ``torchrun --nproc_per_node N -m diffx.cli train-vae`` (DDP; the
same code, gradients all-reduced, gloo on CPU and NCCL on GPUs). Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from diffx import fsio
from diffx.config import DiffxConfig, VaeConfig
from diffx.data.spec import DatasetSpec
from diffx.errors import ConfigError, DataError, DiffxError
from diffx.eval.grids import grid_png, to_display
from diffx.eval.image_metrics import psnr, ssim
from diffx.models.mpvae import MPVAE
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.reader import ShardSet
from diffx.train.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from diffx.train.data import BatchPlan, PlanSampler, sample_generator
from diffx.train.distributed import DistContext, init_distributed
from diffx.train.ema import EMA

log = logging.getLogger(__name__)

NOISE, CROP, FLIP = 0, 1, 2  # purposes of the per-sample generators


class TrainingError(DiffxError):
    """Training cannot go on (a NaN loss); the message names the step and the last good checkpoint."""


@dataclass
class VaeTrainResult:
    output: str
    steps: int
    resumed_from: int
    metrics: dict[str, Any]
    seconds: float
    samples_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)


def build_model(config: VaeConfig, spec: DatasetSpec) -> MPVAE:
    names = spec.modality_names
    channels = tuple(m.channels for m in spec.modalities)
    model_cfg = config.model
    if model_cfg.init_from_sd:
        return MPVAE.from_sd_vae(
            model_cfg.init_from_sd,
            names,
            channels,
            use_pyramid=model_cfg.use_pyramid,
            replicate_grey=model_cfg.replicate_grey,
        )
    return MPVAE(
        modalities=names,
        channels=channels,
        block_out_channels=tuple(model_cfg.block_out_channels),
        layers_per_block=model_cfg.layers_per_block,
        latent_channels=model_cfg.latent_channels,
        norm_num_groups=model_cfg.norm_num_groups,
        use_pyramid=model_cfg.use_pyramid,
        replicate_grey=model_cfg.replicate_grey,
        mid_block_add_attention=model_cfg.mid_block_add_attention,
    )


def _lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def check_shards_match(root: str, spec: DatasetSpec) -> ShardSet:
    """The shards must carry exactly the config's modalities (names, channels, bit depth), in any order."""
    shard_set = ShardSet(root)
    theirs = {m.name: (m.channels, m.bit_depth) for m in shard_set.spec.modalities}
    mine = {m.name: (m.channels, m.bit_depth) for m in spec.modalities}
    if theirs != mine:
        raise DataError(
            f"{root}/_manifest.json",
            f"shards hold modalities {theirs} (channels, bits), the config's data.modalities are {mine}",
            field="dataset.modalities",
        )
    return shard_set


class VaeTrainer:
    """Holds the run's state so a loop, a resume and the final outputs can be read separately."""

    def __init__(
        self,
        config: DiffxConfig,
        ctx: DistContext,
        *,
        resume: bool = True,
        resume_from: str | None = None,
        progress: bool = True,
    ):
        self.config, self.options, self.ctx, self.progress = config, config.vae, ctx, progress
        self.train_cfg = self.options.train
        self.spec = config.data.spec()
        check_shards_match(self.options.data, self.spec)
        self.dataset = ShardDataset(self.options.data, self.options.train_split, list(self.spec.modality_names))
        if len(self.dataset) == 0:
            raise DataError(self.options.data, f"split {self.options.train_split!r} has no rows")
        self.max_values = {m.name: float(m.max_value) for m in self.spec.modalities}
        self.run_key = config.params_hash("data", "vae")
        torch.manual_seed(self.train_cfg.seed)
        self.model = build_model(self.options, self.spec).to(ctx.device)
        if self.train_cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.plan = BatchPlan(
            len(self.dataset), self.train_cfg.batch_size, self.train_cfg.grad_accum, ctx.world_size, self.train_cfg.seed
        )
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.train_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.train_cfg.lr,
            betas=(0.9, 0.999),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: _lr_factor(s, self.train_cfg.warmup_steps, self.train_cfg.steps, self.train_cfg.schedule),
        )
        self.ema = EMA(self.model, self.train_cfg.ema_decay) if self.train_cfg.ema_decay else None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.resumed_from = 0
        if self.train_cfg.lpips_weights is None:
            log.info("LPIPS: no lpips_weights configured; training with MSE (+KL) only")
        else:
            raise ConfigError("vae.train.lpips_weights: LPIPS is not available in this build; set it to null")
        checkpoint = (
            load_checkpoint(resume_from)
            if resume_from
            else (latest_checkpoint(self.options.checkpoints) if resume else None)
        )
        if checkpoint is not None:
            self._restore(checkpoint, explicit=resume_from is not None)
        self.ddp = DistributedDataParallel(self.model) if ctx.distributed else None

    # ------------------------------------------------------------------------------- checkpoints
    def _meta(self) -> dict[str, Any]:
        return {
            "kind": "mpvae",
            "run_key": self.run_key,
            "modalities": list(self.model.config.modalities),
            "channels": list(self.model.config.channels),
            "history": self.history,
            "ema_updates": self.ema.updates if self.ema else 0,
        }

    def _restore(self, checkpoint: Checkpoint, explicit: bool) -> None:
        meta = checkpoint.state["meta"]
        trained = list(zip(meta.get("modalities", []), meta.get("channels", []), strict=True))
        wanted = list(zip(self.model.config.modalities, self.model.config.channels, strict=True))
        if trained != wanted:
            raise ConfigError(
                f"{checkpoint.path}: the checkpoint was trained for modalities {trained}, the config asks for {wanted}"
            )
        if meta.get("run_key") != self.run_key:
            message = (
                f"{checkpoint.path}: made with other data/vae params (run key {meta.get('run_key')}, "
                f"now {self.run_key})"
            )
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
            self.options.checkpoints,
            self.step,
            flat=flat,
            nested={"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            meta=self._meta(),
            keep=self.train_cfg.keep_checkpoints,
        )

    # ------------------------------------------------------------------------------- one step
    def _prepare(self, batch: dict[str, Any], positions: list[int]) -> dict[str, torch.Tensor]:
        """Scale to [-1, 1], then the seeded per-sample crop and flip."""
        crop, seed = self.train_cfg.crop, self.train_cfg.seed
        per_sample: list[dict[str, torch.Tensor]] = []
        for i, position in enumerate(positions):
            images = {name: batch["images"][name][i] * 2 - 1 for name in self.spec.modality_names}
            h, w = next(iter(images.values())).shape[-2:]
            if crop is not None:
                if crop > h or crop > w:
                    raise DataError(batch["id"][i], f"frame {w}x{h} is smaller than vae.train.crop={crop}")
                g = sample_generator(seed, position, CROP)
                top = int(torch.randint(0, h - crop + 1, (1,), generator=g))
                left = int(torch.randint(0, w - crop + 1, (1,), generator=g))
                images = {k: v[:, top : top + crop, left : left + crop] for k, v in images.items()}
            if self.train_cfg.hflip and bool(torch.rand(1, generator=sample_generator(seed, position, FLIP)) < 0.5):
                images = {k: v.flip(-1) for k, v in images.items()}
            per_sample.append(images)
        return {
            name: torch.stack([s[name] for s in per_sample]).to(self.ctx.device) for name in self.spec.modality_names
        }

    def _noise(self, positions: list[int], shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack(
            [torch.randn(shape, generator=sample_generator(self.train_cfg.seed, p, NOISE)) for p in positions]
        ).to(self.ctx.device)

    def _loss(self, images: dict[str, torch.Tensor], positions: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        module = self.ddp or self.model
        h, w = next(iter(images.values())).shape[-2:]
        factor = self.model.downsample_factor
        if h % factor or w % factor:
            raise DataError(
                self.options.data,
                f"frames of {w}x{h} px are not divisible by {factor}; set vae.train.crop to a multiple of it",
            )
        noise = self._noise(positions, (self.model.config.latent_channels, h // factor, w // factor))
        use_bf16 = self.ctx.device.type == "cuda" and self.train_cfg.mixed_precision == "bf16"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        with autocast:
            out = module(images, noise=noise)
        parts: dict[str, float] = {}
        total = torch.zeros((), device=self.ctx.device)
        for name in self.spec.modality_names:
            mse = F.mse_loss(out.reconstructions[name].float(), images[name].float())
            parts[f"mse_{name}"] = float(mse.detach())
            total = total + self.train_cfg.modality_weights.get(name, 1.0) * mse
        kl = out.posterior.kl().float().mean()
        parts["kl"] = float(kl.detach())
        total = total + self.train_cfg.kl_weight * kl
        return total, parts

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        accum = self.train_cfg.grad_accum
        totals: dict[str, float] = {}
        finite = True
        for micro, batch in enumerate(micro_batches):
            positions = self.plan.positions(self.step, micro, self.ctx.rank)
            images = self._prepare(batch, positions)
            sync = self.ddp is None or micro == accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():  # type: ignore[union-attr]
                loss, parts = self._loss(images, positions)
                finite = finite and bool(torch.isfinite(loss))
                (loss / accum).backward()
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[key] = totals.get(key, 0.0) + value / accum
        if not self.ctx.all_true(finite):
            last = latest_checkpoint(self.options.checkpoints)
            raise TrainingError(
                f"step {self.step}: the loss is not finite ({', '.join(f'{k}={v:.4g}' for k, v in totals.items())}); "
                f"stopped without saving. Last good checkpoint: {last.path if last else 'none'}. "
                "Lower vae.train.lr or check the input data."
            )
        if self.train_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return totals

    # ------------------------------------------------------------------------------- the loop
    def run(self, until: int | None = None) -> float:
        """Train up to step ``until`` (default: the configured steps); returns samples per second."""
        end = min(until or self.train_cfg.steps, self.train_cfg.steps)
        if self.step >= end:
            return 0.0
        sampler = PlanSampler(self.plan, self.ctx.rank, self.step, end)
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=detection_collate,
            num_workers=self.train_cfg.num_workers,
            persistent_workers=False,
        )
        batches = iter(loader)
        bar = tqdm(
            total=end - self.step,
            desc="train_vae",
            unit="step",
            disable=not (self.progress and self.ctx.is_main),
            mininterval=1.0,
        )
        started, first_step = time.perf_counter(), self.step
        self.model.train()
        while self.step < end:
            micro_batches = [next(batches) for _ in range(self.train_cfg.grad_accum)]
            totals = self.train_step(micro_batches)
            if self.step % self.train_cfg.log_every == 0 or self.step == end:
                row = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], **totals}
                self.history.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
                bar.set_postfix(loss=f"{totals['loss']:.4f}")
            if self.step % self.train_cfg.checkpoint_every == 0 or self.step == end:
                self.save()
            bar.update(1)
        bar.close()
        self.ctx.barrier()
        elapsed = time.perf_counter() - started
        return (self.step - first_step) * self.train_cfg.batch_size / max(elapsed, 1e-9)

    # ------------------------------------------------------------------------------- outputs
    def _eval_images(self, split: str, limit: int) -> list[dict[str, Any]]:
        dataset = ShardDataset(self.options.data, split, list(self.spec.modality_names))
        return [dataset[i] for i in range(min(limit, len(dataset)))]

    @torch.no_grad()
    def estimate_scale(self, model: MPVAE) -> float:
        """1 / std of posterior samples over training frames (SD's recipe, on *our* data)."""
        batch = self.train_cfg.batch_size
        rows = self._eval_images(self.options.train_split, self.options.scale_batches * batch)
        latents = []
        for start in range(0, len(rows), batch):
            chunk = detection_collate(rows[start : start + batch])
            images = {k: (v * 2 - 1).to(self.ctx.device) for k, v in chunk["images"].items()}
            posterior = model.encode(images)
            positions = list(range(start, start + len(chunk["id"])))
            noise = torch.stack(
                [torch.randn(posterior.mean.shape[1:], generator=sample_generator(-1, p, NOISE)) for p in positions]
            ).to(self.ctx.device)
            latents.append((posterior.mean + posterior.std * noise).float().cpu())
        std = torch.cat(latents).std().item()
        return 1.0 / std if std > 0 else 1.0

    @torch.no_grad()
    def evaluate(self, model: MPVAE) -> tuple[dict[str, Any], bytes]:
        """PSNR/SSIM per modality on the validation split (posterior mode), and a reconstruction grid."""
        rows = self._eval_images(self.options.val_split, self.options.eval_samples)
        if not rows:
            raise DataError(self.options.data, f"split {self.options.val_split!r} has no rows to evaluate on")
        scores: dict[str, dict[str, list[float]]] = {n: {"psnr": [], "ssim": []} for n in self.spec.modality_names}
        tiles: list[list[np.ndarray]] = []
        for start in range(0, len(rows), 8):
            chunk = detection_collate(rows[start : start + 8])
            images = {k: v.to(self.ctx.device) for k, v in chunk["images"].items()}
            recon = model(images={k: v * 2 - 1 for k, v in images.items()}).reconstructions
            for name in self.spec.modality_names:
                pred = ((recon[name].float() + 1) / 2).clamp(0, 1)
                if self.spec.modality(name).bit_depth == 8:  # score what a PNG would store
                    pred = torch.round(pred * 255) / 255
                scores[name]["psnr"] += psnr(pred, images[name]).tolist()
                scores[name]["ssim"] += ssim(pred, images[name]).tolist()
                if start == 0:
                    for i in range(min(4, pred.shape[0])):
                        while len(tiles) <= i:
                            tiles.append([])
                        tiles[i] += [
                            to_display(images[name][i].cpu().numpy(), name),
                            to_display(pred[i].cpu().numpy(), name),
                        ]
        metrics = {name: {k: round(float(np.mean(v)), 4) for k, v in s.items()} for name, s in scores.items()}
        labels = [f"{n} {kind}" for n in self.spec.modality_names for kind in ("input", "recon")]
        return metrics, grid_png(tiles, labels)

    def finish(self, samples_per_second: float) -> dict[str, Any]:
        """Rank 0: EMA weights, latent scale, model folder, metrics, loss curve and grid."""
        if not self.ctx.is_main:
            return {}
        model = self.model
        if self.ema is not None:
            self.ema.copy_to(model)
        model.eval()
        scale = self.estimate_scale(model)
        model.register_to_config(scaling_factor=round(scale, 6))
        _save_model_atomic(model, self.options.output)
        per_modality, grid = self.evaluate(model)
        metrics = {
            "steps": self.step,
            "use_pyramid": self.options.model.use_pyramid,
            "scaling_factor": round(scale, 6),
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "train_samples_per_second": round(samples_per_second, 2),
            "processes": self.ctx.world_size,
            "val": per_modality,
        }
        fsio.write_json_atomic(self.options.metrics, metrics)
        _write_history_csv(self.options.plots, self.history)
        fsio.write_bytes_atomic(self.options.grid, grid)
        return metrics


def _save_model_atomic(model: MPVAE, output: str) -> None:
    """save_pretrained into a sibling folder, then swap it in: a killed run never leaves half a model."""
    final = Path(output)
    staging = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    model.save_pretrained(str(staging), safe_serialization=True)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)


def _write_history_csv(path: str, history: list[dict[str, float]]) -> None:
    columns = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k != "loss", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    fsio.write_bytes_atomic(path, buffer.getvalue().encode())


def train_vae(
    config: DiffxConfig, *, resume: bool = True, resume_from: str | None = None, progress: bool = True
) -> VaeTrainResult:
    """The stage: train (or resume) to ``vae.train.steps`` and write the model, metrics, curve and grid."""
    started = time.perf_counter()
    ctx = init_distributed(config.vae.train.device)
    try:
        trainer = VaeTrainer(config, ctx, resume=resume, resume_from=resume_from, progress=progress)
        samples_per_second = trainer.run()
        metrics = trainer.finish(samples_per_second)
        if ctx.is_main:
            # Checkpoints exist to survive a crash; once the model folder is written they are spent, and a
            # later rerun of the stage (new code, new params) must train afresh, not resume a finished run.
            shutil.rmtree(config.vae.checkpoints, ignore_errors=True)
            log.info(
                "train_vae: %d steps (%d resumed), %.1f samples/s; val %s",
                trainer.step,
                trainer.resumed_from,
                samples_per_second,
                json.dumps(metrics.get("val")),
            )
        return VaeTrainResult(
            config.vae.output,
            trainer.step,
            trainer.resumed_from,
            metrics,
            time.perf_counter() - started,
            samples_per_second,
            trainer.history,
        )
    finally:
        ctx.close()

"""Stage ``train_vae``: train the MP-VAE on canonical shards, on CPU, one GPU or many processes.

Read it top to bottom like nanoGPT: set-up, resume, the step loop, then the outputs. Launch with plain
``diffx train-vae`` (one process) or ``torchrun --nproc_per_node N -m diffx.cli train-vae`` (DDP; the
same code, gradients all-reduced, gloo on CPU and NCCL on GPUs). Only rank 0 writes files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffx import fsio
from diffx.config import VaeConfig, section_hash
from diffx.data.spec import DatasetSpec
from diffx.errors import ConfigError, DataError
from diffx.metrics.grids import grid_png, to_display
from diffx.metrics.image_metrics import psnr, ssim
from diffx.models.lpips import load_lpips
from diffx.models.mpvae import MPVAE
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.reader import ShardSet
from diffx.train.checkpoint import save_model_atomic
from diffx.train.data import sample_generator
from diffx.train.distributed import DistContext
from diffx.train.loop import Trainer, TrainingError, write_history_csv

log = logging.getLogger(__name__)

NOISE, CROP, FLIP = 0, 1, 2  # purposes of the per-sample generators
LOG_MSE_FLOOR = 1e-8  # keeps log(MSE) finite on a perfect reconstruction (200 dB on [-1, 1])


__all__ = ["TrainingError", "VaeTrainResult", "VaeTrainer", "build_model"]


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
            decoder=model_cfg.decoder,
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
        decoder=model_cfg.decoder,
        posterior_logvar_init=model_cfg.posterior_logvar_init,
    )


def latent_resolution_baseline(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The frame averaged down to the latent grid and stretched back (area down, bilinear up): what a VAE
    gets for free. A model that does not beat it has learned nothing the latent size did not already give, which
    a fixed dB floor cannot tell on dark or flat scenes (LLVIP nights passed 15 dB with flat reconstructions)."""
    h, w = images.shape[-2:]
    small = F.interpolate(images.float(), size=(max(1, h // factor), max(1, w // factor)), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


class VaeTrainer(Trainer):
    """The MP-VAE on the loop of diffx/train/loop.py: per-sample crop/flip/noise, MSE per modality + KL."""

    kind = "mpvae"

    def __init__(
        self,
        options: VaeConfig,
        ctx: DistContext,
        *,
        resume: bool = True,
        resume_from: str | None = None,
        progress: bool = True,
    ):
        self.spec = ShardSet(options.data).spec  # what the set is comes from its manifest, never from params
        key = section_hash(options, extra={"modalities": [m.model_dump() for m in self.spec.modalities]})
        super().__init__(ctx, options.train, options.checkpoints, key, progress=progress)
        self.options = options
        dataset = ShardDataset(options.data, options.train_split, list(self.spec.modality_names))
        if len(dataset) == 0:
            raise DataError(options.data, f"split {options.train_split!r} has no rows")
        self.lpips = load_lpips(options.lpips, ctx.device)
        if self.lpips is not None:
            log.info(
                "LPIPS-VGG from %s + %s, loss weight %s",
                options.lpips.vgg16,
                options.lpips.heads,
                self.train_cfg.lpips_weight,
            )
        elif self.train_cfg.lpips_weight:
            raise ConfigError("vae.train.lpips_weight > 0 needs vae.lpips.vgg16 and vae.lpips.heads (local files)")
        torch.manual_seed(self.train_cfg.seed)
        self.model = build_model(options, self.spec).to(ctx.device)
        self.setup(dataset, resume=resume, resume_from=resume_from)

    def identity(self) -> dict[str, Any]:
        return {
            "modalities": [
                [m, c] for m, c in zip(self.model.config.modalities, self.model.config.channels, strict=True)
            ]
        }

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

    def loss(
        self, module: nn.Module, batch: dict[str, Any], positions: list[int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images = self._prepare(batch, positions)
        h, w = next(iter(images.values())).shape[-2:]
        factor = self.model.downsample_factor
        if h % factor or w % factor:
            raise DataError(
                self.options.data,
                f"frames of {w}x{h} px are not divisible by {factor}; set vae.train.crop to a multiple of it",
            )
        shape = (self.model.config.latent_channels, h // factor, w // factor)
        noise = torch.stack(
            [torch.randn(shape, generator=sample_generator(self.train_cfg.seed, p, NOISE)) for p in positions]
        ).to(self.ctx.device)
        with self.autocast():
            out = module(images, noise=noise)
        parts: dict[str, float] = {}
        total = torch.zeros((), device=self.ctx.device)
        for name in self.spec.modality_names:
            recon = out.reconstructions[name].float()
            mse = F.mse_loss(recon, images[name].float())
            parts[f"mse_{name}"] = float(mse.detach())
            term = torch.log(mse + LOG_MSE_FLOOR) if self.train_cfg.reconstruction_loss == "log_mse" else mse
            if self.lpips is not None:
                perceptual = self.lpips(recon, images[name].float()).mean()
                parts[f"lpips_{name}"] = float(perceptual.detach())
                term = term + self.train_cfg.lpips_weight * perceptual
            total = total + self.train_cfg.modality_weights.get(name, 1.0) * term
        # The KL per latent element, like the reconstruction's per-pixel mean: summed over C x H x W (diffusers'
        # posterior.kl()) its weight would grow with the latent area, 64x from the demo's crops to 512 px.
        kl = out.posterior.kl().float().mean() / out.posterior.mean[0].numel()
        parts["kl"] = float(kl.detach())
        return total + self.train_cfg.kl_weight * kl, parts

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
        """PSNR/SSIM (and LPIPS where configured) per modality on the validation split (posterior mode), the
        PSNR of the latent-resolution baseline the gate compares with, and a reconstruction grid."""
        rows = self._eval_images(self.options.val_split, self.options.eval_samples)
        if not rows:
            raise DataError(self.options.data, f"split {self.options.val_split!r} has no rows to evaluate on")
        kinds = ["psnr", "ssim", "baseline_psnr"] + (["lpips"] if self.lpips is not None else [])
        scores: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in self.spec.modality_names}
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
                baseline = latent_resolution_baseline(images[name], model.downsample_factor)
                if self.spec.modality(name).bit_depth == 8:
                    baseline = torch.round(baseline * 255) / 255
                scores[name]["baseline_psnr"] += psnr(baseline, images[name]).tolist()
                if self.lpips is not None:
                    scores[name]["lpips"] += self.lpips(pred * 2 - 1, images[name] * 2 - 1).tolist()
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
        save_model_atomic(model, self.options.output)
        per_modality, grid = self.evaluate(model)
        metrics = {
            "steps": self.step,
            "use_pyramid": self.options.model.use_pyramid,
            "scaling_factor": round(scale, 6),
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "val": per_modality,
        }
        fsio.write_json_atomic(self.options.metrics, metrics)
        fsio.write_json_atomic(self.options.report, self.run_report(samples_per_second))
        write_history_csv(self.options.plots, self.history)
        fsio.write_bytes_atomic(self.options.grid, grid)
        return metrics

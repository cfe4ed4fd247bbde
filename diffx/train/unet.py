"""Stage ``train_unet``: the DiffX-UNet on MP-VAE latents of the captioned shards.

Same loop as the MP-VAE (diffx/train/loop.py): launch with ``diffx train-unet`` or ``torchrun ... -m diffx.cli
train-unet``. Per sample and seeded by its stream position: the latent draw, the timestep, the noise, and
the classifier-free-guidance dropouts (caption -> '', layout -> all slots null), so N processes train
like one. Frozen: the MP-VAE, the text encoder, and (with ``init_from_sd``) the SD base UNet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffx import fsio
from diffx.config import ConditioningConfig, UnetConfig, section_hash
from diffx.data.layout_tensors import model_input
from diffx.data.layouts import is_label_map, layout_channels
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError
from diffx.metrics.grids import draw_boxes, grid_png, layout_display, to_display
from diffx.models.folder import ModelCard, load_pretrained, write_model_folder
from diffx.models.layout import pack_boxes
from diffx.models.mpvae import MPVAE
from diffx.models.text import TextEncoder
from diffx.models.unet import DiffXUNet
from diffx.progress import Progress
from diffx.sample.pipeline import DiffXPipeline, LayoutRequest
from diffx.sample.schedulers import training_scheduler
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.reader import ShardSet
from diffx.train.data import sample_generator
from diffx.train.distributed import DistContext
from diffx.train.loop import Trainer, write_history_csv

log = logging.getLogger(__name__)

LATENT, TIMESTEP, NOISE, CAPTION_DROP, LAYOUT_DROP = 10, 11, 12, 13, 14  # purposes of per-sample generators


def dropped(seed: int, positions: list[int], rate: float, purpose: int) -> list[bool]:
    """Per-sample dropout decisions, a pure function of (seed, stream position)."""
    return [bool(torch.rand(1, generator=sample_generator(seed, p, purpose)) < rate) for p in positions]


def box_weight_map(boxes: torch.Tensor, box_mask: torch.Tensor, size: tuple[int, int], extra: float) -> torch.Tensor:
    """B x 1 x h x w: 1 + ``extra`` on latent cells whose centre lies in any live box (boxes in [0, 1])."""
    height, width = size
    ys = (torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5) / width
    x0, y0, x1, y1 = (boxes[..., k, None, None] for k in range(4))  # B x S x 1 x 1
    inside = (xs >= x0) & (xs <= x1) & (ys[:, None] >= y0) & (ys[:, None] <= y1)  # B x S x h x w
    covered = (inside & (box_mask[..., None, None] > 0)).any(dim=1, keepdim=True)
    return 1.0 + extra * covered.float()


def _encode_one(text: TextEncoder, caption: str, cache: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    states, mask = text.encode([caption])
    cache[caption] = (states[0], mask[0])
    return cache[caption]


def build_unet(
    options: UnetConfig,
    conditioning: ConditioningConfig,
    latent_channels: int,
    text_dim: int,
    phrase_dim: int,
    dense_channels: int = 1,
    dense_factor: int = 8,
) -> DiffXUNet:
    m = options.model
    if m.init_from_sd:
        model = DiffXUNet.from_sd(
            m.init_from_sd,
            layout=m.layout,
            phrase_dim=phrase_dim,
            dense_channels=dense_channels,
            box_raster_channels=m.painted_box_channels,
            layout_tokens=m.layout_tokens,
            freeze=m.freeze_base,
        )
        if model.config.cross_attention_dim != text_dim:
            raise DataError(
                m.init_from_sd,
                f"the SD UNet expects {model.config.cross_attention_dim}-d text states, "
                f"text encoder {conditioning.text_encoder!r} gives {text_dim}",
            )
    else:
        model = _from_scratch(
            options, conditioning.max_objects, latent_channels, text_dim, phrase_dim, dense_channels, dense_factor
        )
    if m.fuser_gate_init:
        model.set_fuser_gates(m.fuser_gate_init)
    return model


def _from_scratch(
    options: UnetConfig,
    max_objects: int,
    latent_channels: int,
    text_dim: int,
    phrase_dim: int,
    dense_channels: int,
    dense_factor: int,
) -> DiffXUNet:
    m = options.model
    return DiffXUNet(
        sample_size=64,
        latent_channels=latent_channels,
        block_out_channels=tuple(m.block_out_channels),
        down_block_types=tuple(m.down_block_types),
        up_block_types=tuple(m.up_block_types),
        layers_per_block=m.layers_per_block,
        attention_head_dim=m.attention_head_dim,
        cross_attention_dim=text_dim,
        norm_num_groups=m.norm_num_groups,
        phrase_dim=phrase_dim,
        layout=m.layout,
        max_objects=max_objects,
        dense_channels=dense_channels,
        dense_factor=dense_factor,
        box_raster_channels=m.painted_box_channels,
        layout_tokens=m.layout_tokens,
    )


@dataclass
class UnetTrainResult:
    output: str
    steps: int
    resumed_from: int
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


class UnetTrainer(Trainer):
    kind = "unet"

    def __init__(
        self,
        options: UnetConfig,
        conditioning: ConditioningConfig,
        ctx: DistContext,
        *,
        resume: bool = True,
        resume_from: str | None = None,
        progress: bool = True,
    ):
        self.spec: DatasetSpec = ShardSet(options.data).spec  # the set's facts come from its manifest
        key = section_hash(options, conditioning, extra={"dataset": self.spec.model_dump(mode="json")})
        super().__init__(ctx, options.train, options.checkpoints, key, progress=progress)
        self.options, self.conditioning = options, conditioning
        self.dense = options.model.layout == "dense"
        if self.dense and self.spec.layout_kind is None:
            raise DataError(
                f"{options.data}/_manifest.json",
                "unet.model.layout is dense but the shard set has no dense layout (its layout_kind is null); "
                "ingest with data.layout_kind set, or train a box model (unet.model.layout: boxes)",
                field="unet.model.layout",
            )
        dataset = ShardDataset(options.data, options.train_split, list(self.spec.modality_names), layout=self.dense)
        if len(dataset) == 0:
            raise DataError(options.data, f"split {options.train_split!r} has no rows")
        self.vae = load_pretrained(MPVAE, options.vae, "MP-VAE").to(ctx.device).eval().requires_grad_(False)
        self.vae.check_modalities(
            self.spec.modality_names, tuple(m.channels for m in self.spec.modalities), options.vae
        )
        self.text = TextEncoder(
            conditioning.text_encoder,
            max_tokens=conditioning.max_tokens,
            tokenizer=conditioning.text_tokenizer,
            device=ctx.device,
            mask_padding=conditioning.mask_caption_padding,
        )
        self.phrase_table = self.text.phrases(list(self.spec.classes)).to(ctx.device)
        torch.manual_seed(self.train_cfg.seed)
        self.model = build_unet(
            options,
            conditioning,
            self.vae.config.latent_channels,
            self.text.hidden_size,
            self.phrase_table.shape[1],
            layout_channels(self.spec) if self.dense else 1,
            self.vae.downsample_factor,
        ).to(ctx.device)
        if self.train_cfg.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
        self.noise_scheduler = training_scheduler(self.train_cfg.prediction_type)
        self.alphas = self.noise_scheduler.alphas_cumprod.to(ctx.device)
        self.cache: dict[str, Any] | None = self._encode_all(dataset) if self.train_cfg.cache_conditioning else None
        self.setup(
            dataset, [p for p in self.model.parameters() if p.requires_grad], resume=resume, resume_from=resume_from
        )

    def identity(self) -> dict[str, Any]:
        return {"modalities": list(self.spec.modality_names), "text_encoder": self.conditioning.text_encoder}

    @torch.no_grad()
    def _encode_all(self, dataset: ShardDataset, chunk: int = 16) -> dict[str, Any]:
        """Posterior mean/std per image and text states per caption, in fixed chunks of the split's order.

        Fixed chunks make the cache the same whatever the world size or resume point, so cached runs stay
        deterministic; the values are what ``loss`` would compute, just once instead of every step. Each image
        is encoded whole (resized by the frame policy, uncropped); a step crops its latent on the 8-px grid at
        the place the sample's seeded crop chose: the latent of those pixels as seen within the whole frame
        (diffx/data/frame.py says where that differs from encoding the crop alone).
        """
        device = self.ctx.device
        posteriors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        counter = Progress(
            "cache conditioning", len(dataset), unit="images", bar=self.progress, enabled=self.ctx.is_main
        )
        for start in range(0, len(dataset), chunk):
            items = [dataset.item(i, crop=False) for i in range(start, min(start + chunk, len(dataset)))]
            by_size: dict[tuple[int, int], list[dict[str, Any]]] = {}
            for item in items:
                by_size.setdefault(item["size"], []).append(item)
            for group in by_size.values():
                batch = detection_collate(group)
                posterior = self.vae.encode({k: (v * 2 - 1).to(device) for k, v in batch["images"].items()})
                for i, sample_id in enumerate(batch["id"]):
                    posteriors[sample_id] = (posterior.mean[i], posterior.std[i])
            captions = sorted({c or "" for c in (item["caption"] for item in items)} - set(texts))
            if captions:
                states, mask = self.text.encode(captions)
                texts.update({c: (states[j], mask[j]) for j, c in enumerate(captions)})
            counter.update(len(items))
        counter.close()
        if "" not in texts:
            states, mask = self.text.encode([""])
            texts[""] = (states[0], mask[0])
        log.info("cached the conditioning of %d images and %d captions", len(posteriors), len(texts))
        return {"posteriors": posteriors, "texts": texts}

    def _conditioning(self, batch: dict[str, Any], captions: list[str]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(posterior mean, posterior std), text states and mask for a batch: from the cache or encoded now."""
        if self.cache is None:
            images = {k: (v * 2 - 1).to(self.ctx.device) for k, v in batch["images"].items()}
            posterior = self.vae.encode(images)
            states, text_mask = self.text.encode(captions)
            return (posterior.mean, posterior.std), states, text_mask
        windows = [p.latent_window(self.vae.downsample_factor) for p in batch["placement"]]
        means, stds = zip(
            *(
                tuple(t[:, top : top + h, left : left + w] for t in self.cache["posteriors"][i])
                for i, (top, left, h, w) in zip(batch["id"], windows, strict=True)
            ),
            strict=True,
        )
        texts = self.cache["texts"]
        states, masks = zip(
            *(texts[c] if c in texts else _encode_one(self.text, c, texts) for c in captions), strict=True
        )
        return (torch.stack(means), torch.stack(stds)), torch.stack(states), torch.stack(masks)

    def loss(
        self, module: nn.Module, batch: dict[str, Any], positions: list[int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, device = self.train_cfg, self.ctx.device
        with torch.no_grad():
            no_caption = dropped(cfg.seed, positions, cfg.caption_dropout, CAPTION_DROP)
            no_layout = dropped(cfg.seed, positions, cfg.layout_dropout, LAYOUT_DROP)
            captions = ["" if drop else (c or "") for c, drop in zip(batch["caption"], no_caption, strict=True)]
            (mean, std), states, text_mask = self._conditioning(batch, captions)
            shape = mean.shape[1:]
            draw = torch.stack(
                [torch.randn(shape, generator=sample_generator(cfg.seed, p, LATENT)) for p in positions]
            ).to(device)
            latents = (mean + std * draw) * self.vae.config.scaling_factor
        sizes = [tuple(img.shape[-2:]) for img in next(iter(batch["images"].values()))]
        boxes, ids, box_mask = pack_boxes(batch["boxes"], batch["labels"], sizes, self.conditioning.max_objects)
        box_mask[torch.tensor(no_layout, dtype=torch.bool)] = 0
        boxes, ids, box_mask = boxes.to(device), ids.to(device), box_mask.to(device)
        dense = None
        if self.dense:  # a dropped layout is an all-zero map, as in the unconditional branch of sampling
            dense = model_input(batch["layout"], self.spec)
            dense[torch.tensor(no_layout, dtype=torch.bool)] = 0
            dense = dense.to(device)
        timesteps = torch.stack(
            [
                torch.randint(
                    0,
                    self.noise_scheduler.config.num_train_timesteps,
                    (),
                    generator=sample_generator(cfg.seed, p, TIMESTEP),
                )
                for p in positions
            ]
        ).to(device)
        noise = torch.stack([torch.randn(shape, generator=sample_generator(cfg.seed, p, NOISE)) for p in positions]).to(
            device
        )
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with self.autocast():
            pred = module(
                noisy,
                timesteps,
                states,
                text_mask,
                boxes=boxes,
                phrases=self.phrase_table[ids],
                box_mask=box_mask,
                dense=dense,
            )
        velocity = cfg.prediction_type == "v_prediction"
        target = self.noise_scheduler.get_velocity(latents, noise, timesteps) if velocity else noise
        error = (pred.float() - target) ** 2
        if cfg.box_loss_weight:
            weight = box_weight_map(boxes, box_mask, tuple(error.shape[-2:]), cfg.box_loss_weight)
            per_sample = (error * weight).flatten(1).mean(dim=1) / weight.flatten(1).mean(dim=1)
        else:
            per_sample = error.flatten(1).mean(dim=1)
        if cfg.min_snr_gamma:
            snr = self.alphas[timesteps] / (1 - self.alphas[timesteps])
            # min(SNR, gamma) / SNR on the noise is min(SNR, gamma) / (SNR + 1) on the velocity (Hang et al. 2023)
            per_sample = per_sample * torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1 if velocity else snr)
        return per_sample.mean(), {
            "caption_dropped": float(np.mean(no_caption)),
            "layout_dropped": float(np.mean(no_layout)),
        }

    def after_step(self) -> None:
        every = self.train_cfg.preview_every
        if every and self.step % every == 0 and self.step < self.train_cfg.steps and self.ctx.is_main:
            fsio.write_bytes_atomic(self.options.grid, self.preview())

    # ------------------------------------------------------------------------------------------ outputs
    def preview(self) -> bytes:
        """Samples for validation layouts: every modality with the planned boxes drawn on it."""
        dataset = ShardDataset(
            self.options.data, self.options.preview_split, list(self.spec.modality_names), layout=self.dense
        )
        rows = [dataset[i] for i in range(min(self.options.preview_samples, len(dataset)))]
        if not rows:
            raise DataError(self.options.data, f"split {self.options.preview_split!r} has no rows to preview")
        pipeline = DiffXPipeline(
            self.vae,
            self.model,
            self.text,
            self.spec,
            self.conditioning.max_objects,
            self.noise_scheduler.config,
            self.ctx.device,
        )
        requests = [
            LayoutRequest(
                r["caption"] or "", r["boxes"], r["labels"], r["size"][0], r["size"][1], seed=i, layout=r.get("layout")
            )
            for i, r in enumerate(rows)
        ]
        preview = self.options.preview
        was_training = self.model.training
        images = pipeline(
            requests,
            sampler=preview.sampler,
            steps=preview.steps,
            guidance=preview.guidance,
            layout_guidance=preview.layout_guidance,
            precision=preview.precision,
        )
        self.model.train(was_training)
        real = "rgb" if "rgb" in self.spec.modality_names else self.spec.modality_names[0]
        tiles = []
        for i, row in enumerate(rows):
            line = [draw_boxes(to_display(row["images"][real].numpy(), real), row["boxes"])]
            if self.dense:
                line.append(layout_display(row["layout"].numpy(), is_label_map(self.spec)))
            line += [
                draw_boxes(to_display(images[n][i].cpu().numpy(), n), row["boxes"]) for n in self.spec.modality_names
            ]
            tiles.append(line)
        heads = [f"real {real}"] + ([f"layout ({self.spec.layout_kind})"] if self.dense else [])
        return grid_png(tiles, heads + [f"gen {n}" for n in self.spec.modality_names])

    def finish(self, samples_per_second: float) -> dict[str, Any]:
        if not self.ctx.is_main:
            return {}
        if self.ema is not None:
            self.ema.copy_to(self.model)
        self.model.eval()
        with fsio.staged_folder(self.options.output) as staging:  # a killed run never leaves half a model
            self.model.save_pretrained(staging, safe_serialization=True)
            write_model_folder(
                Path(staging),
                vae=self.options.vae,
                scheduler=self.noise_scheduler,
                card=ModelCard(
                    dataset=self.spec,
                    text_encoder=self.conditioning.text_encoder,
                    text_tokenizer=self.conditioning.text_tokenizer,
                    max_tokens=self.text.max_tokens,
                    mask_caption_padding=self.text.mask_padding,
                    max_objects=self.conditioning.max_objects,
                    steps=self.step,
                ),
            )
        fsio.write_bytes_atomic(self.options.grid, self.preview())
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        metrics = {
            "steps": self.step,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "params_total": total,
            "params_trainable": trainable,
        }
        fsio.write_json_atomic(self.options.metrics, metrics)
        fsio.write_json_atomic(self.options.report, self.run_report(samples_per_second))
        write_history_csv(self.options.plots, self.history)
        return metrics

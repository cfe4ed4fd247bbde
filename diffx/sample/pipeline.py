"""The DiffX sampling pipeline: layout + caption -> one latent -> every modality.

Classifier-free guidance runs the unconditional branch with an empty caption *and* a null layout (all
slots masked; for a dense layout, an all-zero map), the same inputs the training dropout produces. With a
``layout_guidance`` of its own, guidance is composed (as InstructPix2Pix composes image and text): a third
branch has the caption and a null layout, and
``eps = eps(-, -) + guidance * (eps(c, -) - eps(-, -)) + layout_guidance * (eps(c, l) - eps(c, -))``, so the
layout can be pushed harder than the caption; training drops caption and layout independently, which is what
gives the model all three branches. Each
sample's starting noise comes from its own generator, so a sample is a pure function of (models, caption,
layout, seed, sampler, steps, guidance, precision) whatever batch it is drawn in.

Per batch, the caption encodings, layout tokens, JME output and every attention's projection of them are
computed once and reused at every step (diffx/models/step_cache.py). ``precision`` bf16 (CPU or CUDA) or fp16
(CUDA) runs the UNet under autocast; the scheduler's arithmetic and the VAE decode stay fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from diffx.data.layout_tensors import model_input
from diffx.data.spec import DatasetSpec
from diffx.errors import ConfigError
from diffx.models.layout import pack_boxes
from diffx.models.mpvae import MPVAE
from diffx.models.step_cache import step_invariant_cache
from diffx.models.text import TextEncoder
from diffx.models.unet import DiffXUNet
from diffx.sample.schedulers import sampling_scheduler


@dataclass
class LayoutRequest:
    """One sample to draw: caption, boxes in pixels (N x 4) with class ids, frame size, seed, and for a dense
    model the layout map (1 x H x W stored values, diffx/data/layout_tensors.py)."""

    caption: str
    boxes: torch.Tensor
    labels: torch.Tensor
    height: int
    width: int
    seed: int
    layout: torch.Tensor | None = None


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The UNet's compute precision; fp16 only where it is fast and safe (CUDA)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"generate.sampler.precision: {precision!r} is not one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError("generate.sampler.precision: fp16 needs a CUDA device; use bf16 on a CPU")
    return torch.autocast(device.type, dtype=dtype)


class DiffXPipeline:
    def __init__(
        self,
        vae: MPVAE,
        unet: DiffXUNet,
        text: TextEncoder,
        spec: DatasetSpec,
        max_objects: int,
        schedule: dict[str, Any],
        device: str | torch.device = "cpu",
    ):
        self.vae, self.unet, self.text = vae.eval(), unet.eval(), text
        self.spec = spec
        self.dense = unet.config.layout == "dense"
        self.max_objects = max_objects
        self.schedule = dict(schedule)
        self.device = torch.device(device)
        self.phrase_table = text.phrases(list(spec.classes)).to(self.device)
        self._null_caption = text.encode([""])  # the guidance branch's empty caption, encoded once

    def _latents(self, requests: list[LayoutRequest]) -> torch.Tensor:
        factor = self.vae.downsample_factor
        out = []
        for r in requests:
            g = torch.Generator().manual_seed(int(r.seed))
            out.append(
                torch.randn((self.vae.config.latent_channels, r.height // factor, r.width // factor), generator=g)
            )
        return torch.stack(out).to(self.device)

    def _dense(self, requests: list[LayoutRequest]) -> torch.Tensor:
        for r in requests:
            if r.layout is None or tuple(r.layout.shape[-2:]) != (r.height, r.width):
                got = None if r.layout is None else tuple(r.layout.shape[-2:])
                raise ValueError(f"a dense model needs a {r.height}x{r.width} layout map per request, got {got}")
        return model_input(torch.stack([r.layout for r in requests]), self.spec).to(self.device)

    @torch.no_grad()
    def __call__(
        self,
        requests: list[LayoutRequest],
        *,
        sampler: str,
        steps: int,
        guidance: float,
        layout_guidance: float | None = None,
        precision: str = "fp32",
        cache: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Every modality as B x C x H x W in [0, 1]. ``layout_guidance`` None: one guidance scale over caption and
        layout together. ``cache=False`` recomputes the step-invariant work at every step (the reference the
        cache is measured and tested against)."""
        if len({(r.height, r.width) for r in requests}) != 1:
            raise ValueError("one batch draws one frame size; group requests by size")
        scheduler = sampling_scheduler(sampler, self.schedule)
        scheduler.set_timesteps(steps, device=self.device)
        latents = self._latents(requests) * scheduler.init_noise_sigma
        count = len(requests)
        states, mask = self.text.encode([r.caption for r in requests])
        null_states, null_mask = (t.expand(count, *t.shape[1:]) for t in self._null_caption)
        boxes, ids, box_mask = pack_boxes(
            [r.boxes for r in requests],
            [r.labels for r in requests],
            [(r.height, r.width) for r in requests],
            self.max_objects,
        )
        boxes, ids, box_mask = boxes.to(self.device), ids.to(self.device), box_mask.to(self.device)
        phrases = self.phrase_table[ids]
        dense = self._dense(requests) if self.dense else None
        # the branches, in order: (caption?, layout?) = (no, no) [, (yes, no)], (yes, yes)
        if layout_guidance is not None:
            branches = [(False, False), (True, False), (True, True)]
        else:
            branches = [(False, False), (True, True)] if guidance != 1.0 else [(True, True)]
        all_states = torch.cat([states if c else null_states for c, _ in branches])
        all_mask = torch.cat([mask if c else null_mask for c, _ in branches])
        all_boxes = torch.cat([boxes for _ in branches])
        all_phrases = torch.cat([phrases for _ in branches])
        all_box_mask = torch.cat([box_mask if lay else torch.zeros_like(box_mask) for _, lay in branches])
        all_dense = None
        if dense is not None:
            all_dense = torch.cat([dense if lay else torch.zeros_like(dense) for _, lay in branches])
        with autocast(precision, self.device), step_invariant_cache(self.unet) if cache else contextlib.nullcontext():
            conditioning = (
                self.unet.condition(
                    all_states, all_mask, boxes=all_boxes, phrases=all_phrases, box_mask=all_box_mask, dense=all_dense
                )
                if cache
                else None
            )
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(torch.cat([latents] * len(branches)), t)
                eps = self.unet(
                    model_in,
                    t.expand(model_in.shape[0]).to(self.device),
                    all_states,
                    all_mask,
                    conditioning=conditioning,
                    boxes=all_boxes,
                    phrases=all_phrases,
                    box_mask=all_box_mask,
                    dense=all_dense,
                ).float()
                if layout_guidance is not None:
                    eps_null, eps_caption, eps_both = eps.chunk(3)
                    eps = eps_null + guidance * (eps_caption - eps_null) + layout_guidance * (eps_both - eps_caption)
                elif len(branches) == 2:
                    eps_null, eps_both = eps.chunk(2)
                    eps = eps_null + guidance * (eps_both - eps_null)
                latents = scheduler.step(eps, t, latents).prev_sample
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor)
        return {name: ((image.float() + 1) / 2).clamp(0, 1) for name, image in decoded.items()}

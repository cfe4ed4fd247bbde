"""Training the evaluation detector on the shared loop (diffx/train/loop.py).

The evaluation trains it twice with the same seed and the same number of steps: on the real training
split, and on the real training split plus the synthetic shards. Everything else (schedule, checkpoints,
resume, DDP, the NaN stop) is the loop's, exactly as for the MP-VAE and the UNet.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from diffx.config import DetectorModelConfig, DetectorTrainConfig
from diffx.models.detector import CenterNet, encode_targets, focal_loss, stack_inputs
from diffx.train.data import sample_generator
from diffx.train.distributed import DistContext
from diffx.train.loop import Trainer

log = logging.getLogger(__name__)

FLIP = 3  # purpose of the per-sample flip generator (0-2 are the VAE's and the UNet's)


def build_detector(model: DetectorModelConfig, inputs: list[str], channels: list[int], classes: list[str]) -> CenterNet:
    return CenterNet(
        in_channels=sum(channels),
        num_classes=len(classes),
        width=model.width,
        inputs=tuple(inputs),
        classes=tuple(classes),
    )


class DetectorTrainer(Trainer):
    """CenterNet losses (focal heatmap + L1 size + L1 offset) with a seeded per-sample horizontal flip."""

    kind = "detector"

    def __init__(
        self,
        model: CenterNet,
        dataset: Dataset,
        train: DetectorTrainConfig,
        ctx: DistContext,
        checkpoints: str,
        run_key: str,
        *,
        progress: bool = True,
    ):
        super().__init__(ctx, train, checkpoints, run_key, progress=progress)
        self.model = model.to(ctx.device)
        self.inputs = list(model.config.inputs)
        self.setup(dataset)

    def identity(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "classes": list(self.model.config.classes)}

    def _targets(self, batch: dict[str, Any], positions: list[int], flips: list[bool], shape: tuple[int, int]):
        out_h, out_w = shape[0] // CenterNet.stride, shape[1] // CenterNet.stride
        width = batch["images"][self.inputs[0]].shape[-1]
        encoded = []
        for boxes, labels, flip in zip(batch["boxes"], batch["labels"], flips, strict=True):
            boxes = boxes.numpy().copy()
            if flip:
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            encoded.append(encode_targets(boxes, labels.numpy(), self.model.config.num_classes, out_h, out_w))
        return {k: torch.from_numpy(np.stack([e[k] for e in encoded])).to(self.ctx.device) for k in encoded[0]}

    def loss(
        self, module: nn.Module, batch: dict[str, Any], positions: list[int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        flips = [
            bool(self.train_cfg.hflip and torch.rand(1, generator=sample_generator(self.train_cfg.seed, p, FLIP)) < 0.5)
            for p in positions
        ]
        images = {name: batch["images"][name].clone() for name in self.inputs}
        for i, flip in enumerate(flips):
            if flip:
                for name in self.inputs:
                    images[name][i] = images[name][i].flip(-1)
        x = stack_inputs(images, self.inputs).to(self.ctx.device)
        targets = self._targets(batch, positions, flips, x.shape[-2:])
        with self.autocast():
            out = module(x)
        heat = focal_loss(out["heatmap"], targets["heatmap"])
        mask = targets["mask"][:, None]
        count = mask.sum().clamp(min=1.0)
        size = (F.l1_loss(out["size"].float(), targets["size"], reduction="none") * mask).sum() / count
        offset = (F.l1_loss(out["offset"].float(), targets["offset"], reduction="none") * mask).sum() / count
        total = heat + self.train_cfg.size_weight * size + offset
        return total, {"heatmap": float(heat.detach()), "size": float(size.detach()), "offset": float(offset.detach())}

"""Training the evaluation's layout predictor (diffx/models/layout_net.py) on the shared loop.

Real training frames only, with their stored maps as targets: cross-entropy over the segmentation classes, or
binary cross-entropy for a saliency mask; a seeded per-sample horizontal flip as for the detector.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from diffx.config import LayoutNetTrainConfig
from diffx.data.spec import DatasetSpec
from diffx.models.detector import stack_inputs
from diffx.models.layout_net import LayoutNet
from diffx.train.data import sample_generator
from diffx.train.distributed import DistContext
from diffx.train.loop import Trainer

FLIP = 4  # purpose of the per-sample flip generator (3 is the detector's)
MEASURED_BY_A_NET = ("segmentation", "saliency")


def build_layout_net(spec: DatasetSpec, inputs: list[str], width: int) -> LayoutNet:
    if spec.layout_kind not in MEASURED_BY_A_NET:
        raise ValueError(f"no layout net for {spec.layout_kind!r} layouts")
    return LayoutNet(
        in_channels=sum(spec.modality(m).channels for m in inputs),
        outputs=len(spec.layout_classes) if spec.layout_kind == "segmentation" else 1,
        width=width,
        inputs=tuple(inputs),
        layout_kind=spec.layout_kind,
    )


def layout_loss(logits: torch.Tensor, layouts: torch.Tensor, kind: str) -> torch.Tensor:
    """``layouts``: B x 1 x H x W stored values (label ids, or a mask in [0, 1]); logits may be padded larger."""
    logits = logits[..., : layouts.shape[-2], : layouts.shape[-1]]
    if kind == "segmentation":
        return F.cross_entropy(logits.float(), layouts[:, 0].long())
    return F.binary_cross_entropy_with_logits(logits.float(), (layouts > 0.5).float())


class LayoutNetTrainer(Trainer):
    kind = "layout net"

    def __init__(
        self,
        model: LayoutNet,
        dataset: Dataset,
        train: LayoutNetTrainConfig,
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
        return {"inputs": self.inputs, "layout_kind": self.model.config.layout_kind}

    def loss(
        self, module: nn.Module, batch: dict[str, Any], positions: list[int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        flips = [
            bool(self.train_cfg.hflip and torch.rand(1, generator=sample_generator(self.train_cfg.seed, p, FLIP)) < 0.5)
            for p in positions
        ]
        images = {name: batch["images"][name].clone() for name in self.inputs}
        layouts = batch["layout"].clone()
        for i, flip in enumerate(flips):
            if flip:
                layouts[i] = layouts[i].flip(-1)
                for name in self.inputs:
                    images[name][i] = images[name][i].flip(-1)
        x = stack_inputs(images, self.inputs).to(self.ctx.device)
        with self.autocast():
            logits = module(x)
        return layout_loss(logits, layouts.to(self.ctx.device), self.model.config.layout_kind), {}

"""Exponential moving average of the trained weights, with the usual warm-up so early weights fade fast.

Only the parameters the optimizer updates are shadowed: a frozen SD base (the paper's setting) never changes, so
an fp32 copy of it (about 3.4 GB for SD v1.x's UNet) and a pass over it every step would buy nothing. Frozen
parameters and buffers keep the model's own values when the average is copied in."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, trainable: Iterable[nn.Parameter] | None = None):
        self.decay = decay
        self.updates = 0
        wanted = {id(p) for p in trainable} if trainable is not None else None
        self.names = [
            name for name, p in model.named_parameters() if (p.requires_grad if wanted is None else id(p) in wanted)
        ]
        params = dict(model.named_parameters())
        self.shadow = {name: params[name].detach().clone().float() for name in self.names}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        params = dict(model.named_parameters())
        for name in self.names:
            self.shadow[name].mul_(decay).add_(params[name].detach().float(), alpha=1 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name in self.names:
            params[name].copy_(self.shadow[name].to(params[name].dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: dict[str, torch.Tensor], updates: int) -> None:
        """Checkpoints written before only-trainable shadows also hold frozen weights and buffers: those are
        ignored; a trained parameter without a shadow is an error."""
        missing = [name for name in self.names if name not in shadow]
        if missing:
            raise KeyError(f"EMA state does not match the model: no average for {missing[:5]}")
        self.shadow = {name: shadow[name].float().clone() for name in self.names}
        self.updates = updates

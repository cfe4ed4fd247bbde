"""Exponential moving average of model weights, with the usual warm-up so early weights fade fast."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if value.dtype.is_floating_point:
                shadow.mul_(decay).add_(value.detach().float(), alpha=1 - decay)
            else:
                shadow.copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        model.load_state_dict({k: v.to(state[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: dict[str, torch.Tensor], updates: int) -> None:
        missing = set(self.shadow) ^ set(shadow)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        self.shadow = {k: v.float().clone() for k, v in shadow.items()}
        self.updates = updates

"""The EMA shadows what the optimizer trains, nothing else (a frozen SD base would cost 3.4 GB and a pass a step)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffx.train.ema import EMA


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(4, 4)  # frozen, as an SD base
        self.head = nn.Linear(4, 2)
        self.register_buffer("table", torch.arange(4.0))
        self.base.requires_grad_(False)


def test_only_trained_parameters_are_averaged_and_copied() -> None:
    torch.manual_seed(0)
    model = _Model()
    ema = EMA(model, 0.5)
    assert sorted(ema.shadow) == ["head.bias", "head.weight"]
    start = model.head.weight.detach().clone()
    base = model.base.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
        model.base.weight.add_(1.0)  # would never happen to a frozen base; shows the copy leaves it alone
        model.table.mul_(3)
    ema.update(model)  # warm-up decay min(0.5, 1/10): mostly the new weights
    ema.copy_to(model)
    assert torch.allclose(model.head.weight, start + 0.9)
    assert torch.equal(model.base.weight, base + 1.0) and torch.equal(model.table, torch.arange(4.0) * 3)


def test_trainable_list_and_old_checkpoints() -> None:
    model = _Model()
    only_bias = EMA(model, 0.9, [model.head.bias])
    assert list(only_bias.shadow) == ["head.bias"]
    old = {k: v.float() for k, v in model.state_dict().items()}  # written when every entry was shadowed
    ema = EMA(model, 0.9)
    ema.load_state_dict(old, 7)
    assert ema.updates == 7 and sorted(ema.shadow) == ["head.bias", "head.weight"]
    with pytest.raises(KeyError, match="no average for"):
        ema.load_state_dict({"head.bias": torch.zeros(2)}, 1)

"""Reading a weights file someone else published, without ever running code from it.

``.safetensors`` is read directly. A PyTorch checkpoint (``.pt``/``.pth``, e.g. torchvision's VGG16 or the LPIPS
heads) goes through ``torch.load(weights_only=True)``, which rebuilds only tensors and plain containers: a file
that needs anything else is refused with its name, instead of being unpickled."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffx.errors import ConfigError


def read_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` by name (a ``state_dict`` wrapper and DDP's ``module.`` prefix removed)."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{path}: {what} weights not found (a local .safetensors, .pt or .pth file)")
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(source))
    else:
        try:
            state = torch.load(str(source), map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"{path}: not a plain weights file for {what} ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a mapping of names to tensors for the {what} weights")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` (a subset of ``module``'s entries) in the module's dtypes, naming the first mismatched shape.

    A wrong file of the right kind (another VGG width, a different Inception head) then fails on the entry that
    differs, with the file's name, instead of as a bare size error from deep inside ``load_state_dict``."""
    expected = module.state_dict()
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ConfigError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)

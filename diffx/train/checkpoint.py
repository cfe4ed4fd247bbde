"""Training checkpoints as safetensors + JSON: resumable, and never unpickled.

A checkpoint is a folder ``step-0000123/`` holding one ``<part>.safetensors`` per stateful part (model,
EMA, optimizer, RNG) and ``state.json`` with everything that is not a tensor (step, scheduler, the
optimizer's nested structure with tensor placeholders, run identity). ``state.json`` is written last and
the folder is renamed into place, so a checkpoint either is complete or does not exist.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffx import fsio
from diffx.errors import DiffxError

STATE_NAME = "state.json"
STEP_DIR = re.compile(r"^step-(\d{7})$")


class CheckpointError(DiffxError):
    """A checkpoint is missing, incomplete or made for another model."""


def pack(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Split a nested state (dicts, lists, tensors, scalars) into JSON and a flat tensor dict.

    Dicts become lists of [key, value] pairs so integer keys (optimizer state ids) survive JSON.
    """
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, pack(v, tensors, f"{prefix}.{k}" if prefix else str(k))] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [pack(v, tensors, f"{prefix}.{i}" if prefix else str(i)) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {prefix!r}")


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: unpack(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]

    def tensors(self, part: str) -> dict[str, torch.Tensor]:
        file = self.path / f"{part}.safetensors"
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint")
        return load_file(str(file))

    def nested(self, part: str) -> Any:
        """A nested state saved with ``save_checkpoint(..., nested={part: ...})``."""
        return unpack(self.state["nested"][part], self.tensors(part))


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    flat: dict[str, dict[str, torch.Tensor]],
    nested: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``root/step-NNNNNNN`` atomically; keep the newest ``keep`` checkpoints."""
    root = Path(root)
    final = root / f"step-{step:07d}"
    with fsio.staged_folder(str(final)) as staging_url:  # a killed save leaves the previous checkpoints whole
        staging = Path(staging_url)
        staging.mkdir()
        for part, tensors in flat.items():
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / f"{part}.safetensors")
            )
        packed = {}
        for part, value in nested.items():
            part_tensors: dict[str, torch.Tensor] = {}
            packed[part] = pack(value, part_tensors)
            save_file(part_tensors, str(staging / f"{part}.safetensors"))
        state = {"step": step, "meta": meta, "nested": packed}
        (staging / STATE_NAME).write_text(json.dumps(state, sort_keys=True))
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints (those with state.json), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no {STATE_NAME})")
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{state_file}: not valid JSON ({err})") from None
    return Checkpoint(path, int(state["step"]), state)


def latest_checkpoint(root: str | Path) -> Checkpoint | None:
    found = list_checkpoints(root)
    return load_checkpoint(found[-1]) if found else None


def save_model_atomic(model: Any, output: str) -> None:
    """save_pretrained into a staging folder, then swap it in: a killed run never leaves half a model."""
    with fsio.staged_folder(output) as staging:
        model.save_pretrained(staging, safe_serialization=True)

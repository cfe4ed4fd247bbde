"""Training the evaluation's detectors, and handing the real-data one from the curate stage to evaluate.

Curate and evaluate both need the detector trained on the real reference split with the evaluation's
settings and first seed. Training it costs as much as any other detector of the demo, so curate saves it
with the key of what it was trained on (settings, dataset spec, digest of the split's shards) and evaluate
reuses it only when its own key for that model is the same; otherwise it trains its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from diffx import fsio
from diffx.config import DetectorTrainConfig, EvaluateConfig, section_hash
from diffx.data.spec import DatasetSpec
from diffx.models.detector import CenterNet
from diffx.shards.reader import ShardSet
from diffx.train.checkpoint import save_model_atomic
from diffx.train.detector import DetectorTrainer, build_detector
from diffx.train.distributed import DistContext

log = logging.getLogger(__name__)

KEY_FILE = "diffx_detector.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def split_digest(shards: ShardSet | str, split: str) -> str:
    """The content digest of one split's shards, from the manifest (``shards``: an open set or its root)."""
    records = (shards if isinstance(shards, ShardSet) else ShardSet(shards)).manifest.shards_of(split)
    return hashlib.sha256("".join(r.sha256 for r in records).encode()).hexdigest()[:16]


def seeded(train: DetectorTrainConfig, seed: int, steps: int | None = None) -> DetectorTrainConfig:
    return train.model_copy(update={"seed": seed, **({"steps": steps} if steps is not None else {})})


def real_detector_key(options: EvaluateConfig, spec: DatasetSpec, seed: int, reference_digest: str) -> str:
    """What the real-only detector of ``seed`` depends on: settings, data spec and the reference shards
    (``reference_digest``: their :func:`split_digest`, read once by the caller for every seed)."""
    digest = section_hash(
        options.detector, seeded(options.detector_train, seed), extra={"dataset": spec.model_dump(mode="json")}
    )
    return f"{digest}-{reference_digest}-real"


def inputs_of(options: EvaluateConfig, spec: DatasetSpec) -> list[str]:
    return options.detector.inputs or list(spec.modality_names)


def _new_detector(options: EvaluateConfig, spec: DatasetSpec) -> CenterNet:
    """The evaluation's detector for this data, untrained: what a run trains and what saved weights load into."""
    inputs = inputs_of(options, spec)
    return build_detector(options.detector, inputs, [spec.modality(m).channels for m in inputs], list(spec.classes))


def train_detector(
    label: str,
    dataset: Dataset,
    options: EvaluateConfig,
    spec: DatasetSpec,
    run_key: str,
    *,
    ctx: DistContext,
    train: DetectorTrainConfig,
    save_to: str,
    checkpoints: str,
    init: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> tuple[CenterNet, list[dict[str, float]]]:
    """Train (resuming from the ``checkpoints`` folder), save to ``save_to`` with its key, return it."""
    torch.manual_seed(train.seed)
    model = _new_detector(options, spec)
    if init is not None:
        model.load_state_dict(init)
    trainer = DetectorTrainer(model, dataset, train, ctx, checkpoints, run_key, progress=progress)
    trainer.kind = f"detector ({label})"
    log.info(
        "training the detector %s (%d samples, %d steps of %d, seed %d)",
        label,
        len(dataset),  # type: ignore[arg-type]
        train.steps,
        train.batch_size,
        train.seed,
    )
    trainer.run()
    # scored in the layout a saved one loads in, so a reused detector scores exactly as a freshly trained one
    model = model.to(memory_format=torch.contiguous_format).eval()
    save_detector(model, save_to, run_key, trainer.history)
    return model, trainer.history


class RealDetector(NamedTuple):
    model: CenterNet
    history: list[dict[str, float]]
    key: str  # what it was trained on: settings, data spec, reference shards
    reused: bool  # loaded from ``saved`` rather than trained


def real_detector(
    label: str,
    reference: Dataset,
    options: EvaluateConfig,
    spec: DatasetSpec,
    seed: int,
    reference_digest: str,
    *,
    saved: str | None,
    ctx: DistContext,
    save_to: str,
    checkpoints: str,
    progress: bool = True,
) -> RealDetector:
    """The real-only detector of ``seed``: the one saved in ``saved`` when it was trained under the same key,
    else one trained now; either way saved to ``save_to``. Curate calls this first (its ``curate.detector``
    output); evaluate calls it for its first seed with ``saved`` pointing there (``evaluate.real_detector``),
    so the two stages share one model exactly when they would train the same one."""
    key = real_detector_key(options, spec, seed, reference_digest)
    reused = load_saved(saved, key, options, spec, ctx.device)
    if reused is not None:
        model, history = reused
        if save_to != saved:  # kept with the others too: evaluate's folder holds every model it scored
            save_detector(model, save_to, key, history)
        return RealDetector(model, history, key, reused=True)
    model, history = train_detector(
        label,
        reference,
        options,
        spec,
        key,
        ctx=ctx,
        train=seeded(options.detector_train, seed),
        save_to=save_to,
        checkpoints=checkpoints,
        progress=progress,
    )
    return RealDetector(model, history, key, reused=False)


def save_detector(model: CenterNet, save_to: str, run_key: str, history: list[dict[str, float]]) -> None:
    """The weights (safetensors, swapped in whole), then the key and loss history they were trained with."""
    save_model_atomic(model, save_to)
    fsio.write_json_atomic(fsio.join(save_to, KEY_FILE), {"run_key": run_key, "history": history})


def load_saved(
    folder: str | None, run_key: str, options: EvaluateConfig, spec: DatasetSpec, device: torch.device
) -> tuple[CenterNet, list[dict[str, float]]] | None:
    """The detector saved in ``folder`` and its loss history if it was trained under ``run_key``, else None."""
    if folder is None:
        return None
    path = Path(folder)
    try:
        saved = json.loads((path / KEY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("run_key") != run_key or not (path / WEIGHTS_FILE).is_file():
        log.info("%s: trained under other settings or data; training a new real-data detector", folder)
        return None
    model = _new_detector(options, spec)
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))  # safetensors: tensors only, never pickle
    log.info("reusing the real-data detector of %s (same settings and reference shards)", folder)
    return model.to(device).eval(), list(saved.get("history", []))

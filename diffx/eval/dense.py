"""Layout agreement of dense layouts in the evaluation: train the reader net on real frames, then measure
real test frames (the ceiling), the generated set, and the misaligned control (the floor) the same way.

The measures are in diffx/metrics/layout_agreement.py; the net in diffx/models/layout_net.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffx import fsio
from diffx.config import EvaluateConfig
from diffx.data.spec import DatasetSpec
from diffx.metrics.layout_agreement import ConfusionMatrix, edge_ssim, saliency_scores
from diffx.models.detector import stack_inputs
from diffx.models.layout_net import LayoutNet
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.train.checkpoint import save_model_atomic
from diffx.train.distributed import init_distributed
from diffx.train.layout_net import MEASURED_BY_A_NET, LayoutNetTrainer, build_layout_net

log = logging.getLogger(__name__)

Transform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
MeasuredSet = tuple[ShardDataset, Transform | None]


def _batches(dataset: Dataset, size: int) -> Iterator[dict[str, Any]]:
    count = len(dataset)  # type: ignore[arg-type]
    for start in range(0, count, size):
        yield detection_collate([dataset[i] for i in range(start, min(start + size, count))])


def train_layout_net(
    options: EvaluateConfig, spec: DatasetSpec, reference: ShardDataset, inputs: list[str], run_key: str, progress: bool
) -> LayoutNet:
    ctx = init_distributed(options.device)
    torch.manual_seed(options.layout_net_train.seed)
    model = build_layout_net(spec, inputs, options.layout_net.width)
    trainer = LayoutNetTrainer(
        model,
        reference,
        options.layout_net_train,
        ctx,
        fsio.join(options.checkpoints, "layout_net"),
        run_key,
        progress=progress,
    )
    log.info("evaluate: training the %s net on %d real frames", spec.layout_kind, len(reference))
    trainer.run()
    model.eval()
    save_model_atomic(model, fsio.join(options.output, "layout_net"))
    return model


@torch.no_grad()
def _net_scores(model: LayoutNet, spec: DatasetSpec, measured: MeasuredSet, batch_size: int) -> dict[str, Any]:
    dataset, transform = measured
    device = next(model.parameters()).device
    confusion = ConfusionMatrix(len(spec.layout_classes)) if spec.layout_kind == "segmentation" else None
    s_values: list[float] = []
    mae: list[float] = []
    for batch in _batches(dataset, batch_size):
        images = transform(batch["images"]) if transform else batch["images"]
        planned = batch["layout"]
        logits = model(stack_inputs(images, list(model.config.inputs)).to(device)).float().cpu()
        logits = logits[..., : planned.shape[-2], : planned.shape[-1]]
        if confusion is not None:
            confusion.update(logits.argmax(1), planned[:, 0])
        else:
            s, m = saliency_scores(logits.sigmoid(), planned)
            s_values += s
            mae += m
    if confusion is not None:
        return {"miou": round(confusion.mean_iou(), 4), "pixel_accuracy": round(confusion.pixel_accuracy(), 4)}
    return {"s_measure": round(float(np.mean(s_values)), 4), "mae": round(float(np.mean(mae)), 4)}


def _edge_scores(measured: MeasuredSet, batch_size: int) -> dict[str, Any]:
    dataset, transform = measured
    values: list[float] = []
    for batch in _batches(dataset, batch_size):
        images = transform(batch["images"]) if transform else batch["images"]
        values += edge_ssim(images["rgb"], batch["layout"])
    return {"edge_ssim": round(float(np.mean(values)), 4)}


def layout_agreement(
    options: EvaluateConfig,
    spec: DatasetSpec,
    reference: ShardDataset,
    measured: dict[str, MeasuredSet],
    inputs: list[str],
    run_key: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Per measured set (real_test, generated, control_misaligned): the agreement of its images with its maps."""
    batch = options.layout_net_train.batch_size
    if spec.layout_kind in MEASURED_BY_A_NET:
        model = train_layout_net(options, spec, reference, inputs, run_key, progress)
        return {name: _net_scores(model, spec, one, batch) for name, one in measured.items()}
    if spec.layout_kind == "edges" and "rgb" in spec.modality_names:
        return {name: _edge_scores(one, batch) for name, one in measured.items()}
    reason = (
        "face renderings need the 3DDFA fitter that made them"
        if spec.layout_kind == "face"
        else "edge maps are compared with the RGB's edges, and the data has no rgb modality"
    )
    log.warning("evaluate: layout agreement of %s layouts is not measured: %s", spec.layout_kind, reason)
    return {"not_measured": reason}

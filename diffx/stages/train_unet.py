"""Stage ``train_unet``: the DiffX-UNet trained on the captioned shards through the frozen MP-VAE.

Reads ``unet`` and ``conditioning``. Single process or torchrun / accelerate (one process per device); the
loop and the trainer are :class:`diffx.train.unet.UnetTrainer`. Writes a self-contained model folder.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from diffx.config import ConditioningConfig, DiffxConfig, UnetConfig
from diffx.stages.guard import guard
from diffx.train.distributed import init_distributed
from diffx.train.unet import UnetTrainer, UnetTrainResult

log = logging.getLogger(__name__)


def run(config: DiffxConfig, **kwargs: Any) -> UnetTrainResult:
    guard("train_unet", config)
    return train_unet(config.unet, config.conditioning, **kwargs)


def train_unet(
    options: UnetConfig,
    conditioning: ConditioningConfig,
    *,
    resume: bool = True,
    resume_from: str | None = None,
    progress: bool = True,
) -> UnetTrainResult:
    """Writes a self-contained model folder: the UNet, a copy of its VAE, the noise schedule and a model card
    (diffx/models/folder.py), so the folder can be moved or uploaded and still generate."""
    started = time.perf_counter()
    ctx = init_distributed(options.train.device)
    try:
        trainer = UnetTrainer(options, conditioning, ctx, resume=resume, resume_from=resume_from, progress=progress)
        samples_per_second = trainer.run()
        metrics = trainer.finish(samples_per_second)
        if ctx.is_main:
            shutil.rmtree(options.checkpoints, ignore_errors=True)  # spent: see train_vae
            log.info(
                "train_unet: %d steps in %.0fs, %.1f samples/s",
                trainer.step,
                time.perf_counter() - started,
                samples_per_second,
            )
        return UnetTrainResult(options.output, trainer.step, trainer.resumed_from, metrics, trainer.history)
    finally:
        ctx.close()

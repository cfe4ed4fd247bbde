"""Stage ``train_vae``: the MP-VAE trained on the canonical shards, written as a model folder.

Reads ``vae``; the modalities come from the manifest of ``vae.data``. Single process or torchrun / accelerate
(one process per device); the loop and the trainer are :class:`diffx.train.vae.VaeTrainer`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import Any

from diffx.config import DiffxConfig, VaeConfig
from diffx.stages.guard import guard
from diffx.train.distributed import init_distributed
from diffx.train.vae import VaeTrainer, VaeTrainResult

log = logging.getLogger(__name__)


def run(config: DiffxConfig, **kwargs: Any) -> VaeTrainResult:
    guard("train_vae", config)
    return train_vae(config.vae, **kwargs)


def train_vae(
    options: VaeConfig, *, resume: bool = True, resume_from: str | None = None, progress: bool = True
) -> VaeTrainResult:
    """The stage: train (or resume) to ``vae.train.steps`` and write the model, metrics, curve and grid.

    The modalities come from the manifest of ``options.data``."""
    started = time.perf_counter()
    ctx = init_distributed(options.train.device)
    try:
        trainer = VaeTrainer(options, ctx, resume=resume, resume_from=resume_from, progress=progress)
        samples_per_second = trainer.run()
        metrics = trainer.finish(samples_per_second)
        if ctx.is_main:
            # Checkpoints exist to survive a crash; once the model folder is written they are spent, and a
            # later rerun of the stage (new code, new params) must train afresh, not resume a finished run.
            shutil.rmtree(options.checkpoints, ignore_errors=True)
            log.info(
                "train_vae: %d steps (%d resumed), %.1f samples/s; val %s",
                trainer.step,
                trainer.resumed_from,
                samples_per_second,
                json.dumps(metrics.get("val")),
            )
        return VaeTrainResult(
            options.output,
            trainer.step,
            trainer.resumed_from,
            metrics,
            time.perf_counter() - started,
            samples_per_second,
            trainer.history,
        )
    finally:
        ctx.close()

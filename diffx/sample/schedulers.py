"""Noise schedules: DiffX's scaled-linear betas (0.00085..0.012, T = 1000, epsilon prediction), as SD v1.x.

The same schedule trains (DDPM) and samples (DDIM, DPM-Solver++, UniPC, or PNDM = the paper's PLMS).
"""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, UniPCMultistepScheduler

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, clip_sample=False)


def sampling_scheduler(name: str) -> Any:
    if name == "ddim":
        return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type="dpmsolver++", steps_offset=1)
    if name == "unipc":
        return UniPCMultistepScheduler(**SCHEDULE, steps_offset=1)
    if name == "pndm":
        return PNDMScheduler(**SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    raise ValueError(f"unknown sampler {name!r}; expected ddim, dpmsolver++, unipc or pndm")

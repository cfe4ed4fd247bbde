"""Noise schedules: DiffX's scaled-linear betas (0.00085..0.012, T = 1000), as SD v1.x.

The UNet predicts the noise (epsilon, SD v1.x and the paper) or the velocity (v, SD 2.x): a UNet trained from
scratch on epsilon must learn to pass its input through at high noise, where the image's layout is decided, and a
small one learns that slowly; v asks for the clean image there instead. Training (DDPM) saves its schedule,
prediction type included, into the model folder; every sampler (DDIM, DPM-Solver++, UniPC, or PNDM = the paper's
PLMS) is built from that saved config, so sampling always follows the trained schedule.
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
SAMPLERS = {
    "ddim": (DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "steps_offset": 1}),
    "unipc": (UniPCMultistepScheduler, {"steps_offset": 1}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1}),
}


PREDICTION_TYPES = ("epsilon", "v_prediction")


def training_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
    return DDPMScheduler(**{**SCHEDULE, "prediction_type": prediction_type}, clip_sample=False)


def sampling_scheduler(name: str, schedule: dict[str, Any]) -> Any:
    """A sampler over the trained ``schedule`` (a scheduler config, as saved in the model folder)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    cls, options = SAMPLERS[name]
    trained = {k: schedule[k] for k in SCHEDULE if k in schedule}
    return cls(**trained, **options)

"""The whole chain at smoke-test size, as dotted params overrides a user would pass to ``dvc exp run -S``,
and the runner of the real ``git`` / ``dvc`` / ``diffx`` executables of this environment.

One list for every test that runs the real pipeline (the fresh-clone test, the repo-copy tests), so they all
exercise the same short chain: a few VAE/UNet/detector steps, a handful of generated samples, and gate floors
that a 2-step model's noise can pass (the floors in params.yaml are for the demo model, not this one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent  # this environment's dvc and diffx

TINY_CHAIN: dict[str, Any] = {
    "vae.train.steps": 2,
    "vae.train.log_every": 1,
    "vae.scale_batches": 1,
    "vae.eval_samples": 4,
    "quality.vae.default_min_psnr": 3.0,
    "quality.vae.min_ssim": -1.0,
    "quality.vae.min_gain_over_baseline_db": -30.0,  # a 2-step VAE trails the blur by ~15 dB
    "unet.train.steps": 2,
    "unet.train.log_every": 1,
    "unet.train.batch_size": 4,
    "unet.preview_samples": 2,
    "unet.preview.steps": 2,
    "unet.preview.guidance": 2.0,
    "plan.num_samples": 6,
    "plan.rows_per_shard": 3,
    "generate.batch_size": 3,
    "generate.sampler.steps": 2,
    "generate.sampler.guidance": 2.0,
    "quality.generated.max_hist_distance": 1.0,
    "quality.generated.max_mean_shift": 1.0,
    "quality.generated.min_honoured_share": 0.0,
    "quality.generated.min_std": 0.0,
    "quality.generated.min_nonzero_fraction": 0.0,
    "quality.generated.max_colour_outlier": 1000.0,  # a 2-step model's colours and edges are noise
    "quality.generated.max_misregistration_px": 1000.0,
    "evaluate.detector_train.steps": 2,
    "evaluate.detector_train.batch_size": 4,
    "evaluate.detector_train.log_every": 1,
    "evaluate.layout_net_train.steps": 2,
    "evaluate.layout_net_train.batch_size": 4,
    "evaluate.layout_net_train.log_every": 1,
    "evaluate.kid_subsets": 5,
    "evaluate.grid_samples": 2,
}


def set_args() -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run``."""
    args: list[str] = []
    for key, value in TINY_CHAIN.items():
        args += ["-S", f"{key}={value}"]
    return args


def apply(params: dict[str, Any]) -> dict[str, Any]:
    """The same overrides written into a params mapping (for tests that edit params.yaml directly)."""
    for dotted, value in TINY_CHAIN.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"{dotted}: not in params.yaml, so DVC could not see it")
        node[leaf] = value
    return params


RELOCATED = ("data/", "models/", "reports/", "metrics/", "cache/", "reviews/", "checkpoints/")


def relocated(params: Any, work: Path, key: str = "") -> Any:
    """``params`` with every repo-relative data, model, report or output path moved under ``work``, so a test
    runs the stage functions on the real params without writing into the repository."""
    from diffx.config import OUTPUT_KEYS

    if isinstance(params, dict):
        return {k: relocated(v, work, k) for k, v in params.items()}
    if isinstance(params, str) and (params.startswith(RELOCATED) or key in OUTPUT_KEYS):
        return str(work / params)
    return params


def run(cwd: Path, *args: str, ok: bool = True, timeout: int = 600, env: dict[str, str] | None = None) -> str:
    """Run a tool as a user would (this environment first on PATH, a git identity for experiments); its output."""
    env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "diffx-test",
        "GIT_AUTHOR_EMAIL": "test@diffx.local",
        "GIT_COMMITTER_NAME": "diffx-test",
        "GIT_COMMITTER_EMAIL": "test@diffx.local",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert (done.returncode == 0) == ok, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr

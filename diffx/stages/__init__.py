"""The chain, one module per DVC stage: ingest, caption, refine, train_vae, train_unet, plan, generate, curate,
evaluate, and check (the quality gates).

Each module's ``run(config)`` reads that stage's own sections of the loaded configuration, refuses outputs that
would clobber an input or another stage's output (:mod:`diffx.stages.guard`), and calls the stage function
beside it, which takes only those typed sections and reads facts about the data from the manifests of the
artefacts it reads. The CLI (diffx/cli.py), dvc.yaml and the Prefect tasks (flows/tasks.py) call ``run`` and
nothing else, so every way of running a stage runs it with the same settings. The mechanisms (readers, the
writer, models, losses, samplers, gates, metrics) live in the library packages below; nothing there imports a
stage.

Stage modules load lazily (``diffx.stages.train_unet`` imports torch, ``diffx.stages.plan`` does not), so
``from diffx import stages; stages.plan.run(config)`` costs only what that stage needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from diffx.stages.guard import GATE_INPUTS, GATES, STAGE_PATHS, output_conflicts, refuse_unsafe_outputs

STAGES = ("ingest", "caption", "refine", "train_vae", "train_unet", "plan", "generate", "curate", "evaluate", "check")

__all__ = ["GATES", "GATE_INPUTS", "STAGES", "STAGE_PATHS", "output_conflicts", "refuse_unsafe_outputs"]


def __getattr__(name: str) -> ModuleType:
    if name in STAGES or name == "survey":
        return importlib.import_module(f"diffx.stages.{name}")
    raise AttributeError(f"module 'diffx.stages' has no attribute {name!r}")

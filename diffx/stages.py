"""The wiring from one loaded configuration to each stage function: which sections a stage gets.

The CLI (diffx/cli.py) and the Prefect tasks (flows/tasks.py) both call these, so both run a stage with
exactly the same settings. Each stage function itself takes only its own typed sections plus the artefacts
it reads; facts about the data come from the manifests of those artefacts, never from params.
"""

from __future__ import annotations

from typing import Any

from diffx.config import DiffxConfig

GATE_INPUTS = {
    "ingest": lambda c: c.ingest.output,
    "captions": lambda c: c.refine.output,
    "vae": lambda c: c.vae.metrics,
    "generated": lambda c: c.generate.output,
}


def ingest(config: DiffxConfig, *, progress: bool = True) -> Any:
    from diffx.data.ingest import ingest as run

    return run(config.data, config.ingest, config.shards, progress=progress)


def caption(config: DiffxConfig, *, progress: bool = True) -> Any:
    from diffx.caption.stage import caption as run

    return run(config.caption, progress=progress)


def refine(config: DiffxConfig) -> Any:
    from diffx.caption.refine import refine as run

    return run(config.refine, config.conditioning, config.shards, config.caption.template)


def train_vae(config: DiffxConfig, **kwargs: Any) -> Any:
    from diffx.train.vae import train_vae as run

    return run(config.vae, **kwargs)


def train_unet(config: DiffxConfig, **kwargs: Any) -> Any:
    from diffx.train.unet import train_unet as run

    return run(config.unet, config.conditioning, **kwargs)


def plan(config: DiffxConfig) -> dict[str, Any]:
    from diffx.sample.planner import plan as run

    return run(config.plan, config.conditioning, config.caption.template)


def generate(config: DiffxConfig, **kwargs: Any) -> Any:
    from diffx.sample.generate import generate as run

    return run(config.generate, **kwargs)


def curate(config: DiffxConfig, *, progress: bool = True) -> Any:
    from diffx.curate.stage import curate as run

    return run(config.curate, config.evaluate, progress=progress)


def evaluate(config: DiffxConfig, *, progress: bool = True) -> Any:
    from diffx.eval.stage import evaluate as run

    return run(config.evaluate, progress=progress)


def check(gate: str, config: DiffxConfig, data: str | None = None) -> Any:
    """A quality gate on ``data``, by default the output of the stage it guards."""
    from diffx.quality.gate import run_gate

    default = GATE_INPUTS.get(gate)  # an unknown gate is named by run_gate
    return run_gate(
        gate,
        config.quality,
        config.conditioning,
        data or (default(config) if default else ""),
        review_queue=config.refine.queue if gate == "captions" else None,
    )

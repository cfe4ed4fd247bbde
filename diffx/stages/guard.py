"""What each stage reads and writes, by setting, and the guard every stage runs before it writes anything.

A run is refused when its outputs would replace, delete or mix into an input, another stage's output, or a
folder diffx did not write; ``diffx params check`` reports colliding outputs of a whole configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffx import fsio
from diffx.config import DiffxConfig
from diffx.errors import ConfigError
from diffx.section import RECORDER

GATE_INPUTS = {
    "ingest": lambda c: c.ingest.output,
    "captions": lambda c: c.refine.output,
    "vae": lambda c: c.vae.metrics,
    "generated": lambda c: c.generate.output,
}


# What each stage reads and writes, by setting: the guard below refuses a run whose output would replace, delete or
# mix into an input, another stage's output, or a folder diffx did not write. Kinds: file, folder (of our files),
# shards (a shard set), model (a save_pretrained folder), site (a folder another tool fills: overlaps only).
Paths = dict[str, str | None]
Outputs = dict[str, tuple[str | None, str]]
GATES = tuple(GATE_INPUTS)


def gate_outputs(c: DiffxConfig, gate: str) -> Outputs:
    q = c.quality
    return {
        f"quality.reports ({gate})": (fsio.join(q.reports, f"{gate}.json"), "file"),
        f"quality.metrics ({gate})": (fsio.join(q.metrics, f"{gate}.json"), "file"),
        "quality.docs": (q.docs, "site"),  # great_expectations' data docs: its fonts, scripts and pages
    }


def _training_outputs(name: str, section: Any) -> Outputs:
    """A training stage writes a model folder, checkpoints (removed when done), and its metrics and reports."""
    kinds = {
        "output": "model",
        "checkpoints": "folder",
        "metrics": "file",
        "report": "file",
        "plots": "file",
        "grid": "file",
    }
    return {f"{name}.{key}": (getattr(section, key), kind) for key, kind in kinds.items()}


STAGE_PATHS: dict[str, Callable[[DiffxConfig], tuple[Paths, Outputs]]] = {
    "ingest": lambda c: (
        {"ingest.source.root": c.ingest.source.root},
        {
            "ingest.output": (c.ingest.output, "shards"),
            "ingest.report": (c.ingest.report, "file"),
            "ingest.metrics": (c.ingest.metrics, "file"),
        },
    ),
    "caption": lambda c: (
        {"caption.data": c.caption.data},
        {
            "caption.output": (c.caption.output, "file"),
            "caption.report": (c.caption.report, "file"),
            "caption.cache": (c.caption.cache, "file"),
        },
    ),
    "refine": lambda c: (
        {"refine.data": c.refine.data, "refine.captions": c.refine.captions, "refine.decisions": c.refine.decisions},
        {
            "refine.output": (c.refine.output, "shards"),
            "refine.queue": (c.refine.queue, "file"),
            "refine.report": (c.refine.report, "file"),
        },
    ),
    "train_vae": lambda c: ({"vae.data": c.vae.data}, _training_outputs("vae", c.vae)),
    "train_unet": lambda c: ({"unet.data": c.unet.data, "unet.vae": c.unet.vae}, _training_outputs("unet", c.unet)),
    "plan": lambda c: (
        {"plan.source": c.plan.source},
        {"plan.output": (c.plan.output, "file"), "plan.report": (c.plan.report, "file")},
    ),
    "generate": lambda c: (
        {"generate.plan": c.generate.plan, "generate.unet": c.generate.unet},
        {"generate.output": (c.generate.output, "shards"), "generate.report": (c.generate.report, "file")},
    ),
    "curate": lambda c: (
        {"curate.synthetic": c.curate.synthetic, "evaluate.real": c.evaluate.real},
        {
            "curate.output": (c.curate.output, "shards"),
            "curate.scores": (c.curate.scores, "file"),
            "curate.report": (c.curate.report, "file"),
            "curate.detector": (c.curate.detector, "model"),
            "curate.checkpoints": (c.curate.checkpoints, "folder"),
        },
    ),
    "evaluate": lambda c: (
        {
            "evaluate.real": c.evaluate.real,
            "evaluate.synthetic": c.evaluate.synthetic,
            "evaluate.curated": c.evaluate.curated,
            "evaluate.real_detector": c.evaluate.real_detector,
        },
        {
            "evaluate.output": (c.evaluate.output, "folder"),
            "evaluate.checkpoints": (c.evaluate.checkpoints, "folder"),
            "evaluate.metrics": (c.evaluate.metrics, "file"),
            "evaluate.report": (c.evaluate.report, "file"),
            "evaluate.plots": (c.evaluate.plots, "folder"),
            "evaluate.grid": (c.evaluate.grid, "file"),
        },
    ),
}


def output_conflicts(config: DiffxConfig) -> list[str]:
    """Outputs of two settings that are the same path or nest: one stage's run would replace the other's output."""
    every: dict[str, str | None] = {}
    for paths in STAGE_PATHS.values():
        every.update({key: url for key, (url, _) in paths(config)[1].items()})
    for gate in GATES:
        every.update({key: url for key, (url, _) in gate_outputs(config, gate).items()})
    return fsio.collisions(every)


def refuse_unsafe_outputs(stage: str, inputs: Paths, outputs: Outputs, config: DiffxConfig | None = None) -> None:
    """Refuse, before anything is written, a run that would destroy an input or somebody else's files."""
    problems = fsio.overlaps({key: url for key, (url, _) in outputs.items()}, inputs)
    problems += output_conflicts(config) if config is not None else []
    for key, (url, kind) in outputs.items():
        if url and (why := fsio.foreign_content(url, kind)):
            problems.append(f"{key} ({url}): {why}; move it away or point {key} elsewhere")
    if problems:
        raise ConfigError(f"stage {stage} refuses to write: " + "; ".join(problems))


def guard(stage: str, config: DiffxConfig) -> None:
    """Refuse to run ``stage`` when its outputs would replace, delete or mix into an input or another output."""
    # paths of every stage are read to compare them, not to compute anything: not the stage's params (dvc.yaml)
    with RECORDER.pause():
        inputs, outputs = STAGE_PATHS[stage](config)
        refuse_unsafe_outputs(stage, inputs, outputs, config)


def guard_gate(gate: str, data: str, config: DiffxConfig) -> None:
    """The same refusal for a quality gate reading ``data`` and writing its reports and metrics."""
    with RECORDER.pause():
        refuse_unsafe_outputs(f"check {gate}", {"data": data}, gate_outputs(config, gate), config)

"""Prefect cache keys for stages whose inputs can be named: params sections and input shard sets.

The key is what DVC would look at: the settings the stage takes, the manifests (sha256 of every shard) of
its input shard sets, and where its outputs go. A key alone cannot know whether the outputs are still
there, so the flow calls the task with ``refresh_cache=outputs_missing(...)``: a deleted output is made
again, and a cache hit never leaves a missing file behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from diffx import fsio
from diffx.config import DiffxConfig, section_hash
from diffx.section import Section


def _digest(url: str) -> str:
    """sha256 of a file, the manifest of a shard set (a folder), or 'missing'."""
    fs, path = fsio.get_fs(url)
    target = fsio.join(path, "_manifest.json") if fs.isdir(path) else path
    if not fs.exists(target):
        return "missing"
    return fsio.sha256_file(fs, target)


def stage_cache_key(
    sections: Callable[[DiffxConfig], tuple[Section, ...]],
    inputs: Callable[[DiffxConfig], list[str]],
    outputs: Callable[[DiffxConfig], list[str]],
) -> Callable[[Any, dict[str, Any]], str]:
    """A ``cache_key_fn`` for a task whose first parameter is ``config``."""

    def key(_context: Any, parameters: dict[str, Any]) -> str:
        config: DiffxConfig = parameters["config"]
        parts = [section_hash(*sections(config))]
        parts += [f"{url}={_digest(url)}" for url in inputs(config)]
        parts += outputs(config)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    return key


def outputs_missing(urls: list[str]) -> bool:
    for url in urls:
        fs, path = fsio.get_fs(url)
        if not fs.exists(path):
            return True
    return False


def curate_outputs(c: DiffxConfig) -> list[str]:
    return [
        fsio.join(c.curate.output, "_manifest.json"),
        c.curate.scores,
        c.curate.report,
        fsio.join(c.curate.detector, "diffusion_pytorch_model.safetensors"),
    ]


def evaluate_outputs(c: DiffxConfig) -> list[str]:
    models = ["real", *(r.name for r in c.evaluate.recipes)]  # the first seed's
    return [
        c.evaluate.metrics,
        c.evaluate.report,
        *(fsio.join(c.evaluate.output, m, "diffusion_pytorch_model.safetensors") for m in models),
    ]


# curate judges with the evaluation's detector and features, so those sections are part of its key
curate_cache_key = stage_cache_key(
    lambda c: (c.curate, c.evaluate), lambda c: [c.evaluate.real, c.curate.synthetic], curate_outputs
)
evaluate_cache_key = stage_cache_key(
    lambda c: (c.evaluate,),
    lambda c: [
        c.evaluate.real,
        c.evaluate.synthetic,
        c.evaluate.curated,
        fsio.join(c.curate.detector, "diffx_detector.json"),
    ],
    evaluate_outputs,
)

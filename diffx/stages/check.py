"""Stages ``check_ingest``, ``check_captions``, ``check_vae``, ``check_generated``: the quality gate after a stage.

Reads ``quality`` (and ``conditioning``'s limits); each gate validates the output of the stage it guards (or
``data``) with its great_expectations suite (:func:`diffx.quality.gate.run_gate`) and stops the chain when an
expectation fails.
"""

from __future__ import annotations

from typing import Any

from diffx.config import DiffxConfig
from diffx.quality.gate import run_gate
from diffx.stages.guard import GATE_INPUTS, GATES, guard_gate


def run(gate: str, config: DiffxConfig, data: str | None = None) -> Any:
    """A quality gate on ``data``, by default the output of the stage it guards."""
    default = GATE_INPUTS.get(gate)  # an unknown gate is named by run_gate
    data = data or (default(config) if default else "")
    if gate in GATES:
        guard_gate(gate, data, config)
    return run_gate(
        gate,
        config.quality,
        config.conditioning,
        data,
        review_queue=config.refine.queue if gate == "captions" else None,
    )

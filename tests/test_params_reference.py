"""docs/params.md is generated from the typed configuration and must match it."""

from __future__ import annotations

from pathlib import Path

from diffx.config import DiffxConfig, render_params
from diffx.params_reference import render_params_reference

REPO = Path(__file__).resolve().parents[1]


def test_docs_params_is_current() -> None:
    stale = (REPO / "docs" / "params.md").read_text() != render_params_reference()
    assert not stale, "docs/params.md is stale: run `diffx params reference --out docs/params.md`"


def test_every_rendered_key_is_in_the_reference() -> None:
    """Each leaf key params.yaml spells out has a row (reader options aside: docs/readers.md holds them)."""
    page = render_params_reference()
    keys, stack = [], []
    for line in render_params(DiffxConfig()).splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip() or stripped.lstrip().startswith("-") or ":" not in stripped:
            continue
        depth = (len(stripped) - len(stripped.lstrip())) // 2
        key, _, value = stripped.strip().partition(":")
        stack[depth:] = [key]
        if value.strip():
            keys.append(".".join(stack))
    leaves = [k for k in keys if not k.startswith(("ingest.source.", "evaluate.recipes."))]
    assert len(leaves) > 150
    missing = [k for k in leaves if f"| `{k}` |" not in page]
    assert not missing, missing[:10]

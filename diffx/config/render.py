"""params.yaml rendered from the sections, each setting's description as its comment (`diffx params render`)."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel

from diffx.config.root import DiffxConfig

RENDER_HEADER = """\
# diffx parameters: one section per stage, typed and checked by diffx/config/ (unknown keys fail).
# Rendered from the typed defaults by `diffx params render` (make params): edit values here freely;
# `diffx params check params.yaml` validates a file without running anything. Defaults run the whole chain on
# the bundled demo data on a CPU.
"""


def _inline(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _render(section: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        comment = f"  # {field.description}" if field.description else ""
        if isinstance(value, BaseModel):  # a section, or a fact model set in params (data.frame): a block
            lines.append(f"{pad}{name}:{comment}")
            lines.extend(_render(value, indent + 1))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel | dict):
            lines.append(f"{pad}{name}:{comment}")
            lines.extend(f"{pad}  - {_inline(_plain(item))}" for item in value)
        else:
            lines.append(f"{pad}{name}: {_inline(_plain(value))}{comment}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    return value


def render_params(config: DiffxConfig) -> str:
    """Every key of ``config`` as YAML, with each field's description as its comment."""
    out = [RENDER_HEADER]
    for name in type(config).model_fields:
        section = getattr(config, name)
        doc = " ".join((type(section).__doc__ or "").strip().split("\n\n")[0].split())
        out.append("")
        if doc:
            out.extend(textwrap.wrap(f"{name}: {doc}", 114, initial_indent="# ", subsequent_indent="# "))
        out.append(f"{name}:")
        out.extend(_render(section, 1))
    text = "\n".join(out) + "\n"
    if yaml.safe_load(text) != config.model_dump(mode="json"):  # a rendering bug must never change a value
        raise AssertionError("rendered params do not read back as the same values")
    return text

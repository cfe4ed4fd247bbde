"""Options every reader shares: how a modality's channels are read, and how its files are named.

Real releases disagree with the canonical contract in small, regular ways (KAIST stores LWIR as three nearly
equal channels, some repackagings name the pairs ``<id>_visible.png`` / ``<id>_lwir.png``). These options say
so in params, per modality, instead of in a hand-written conversion script.
"""

from __future__ import annotations

import os
import string
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field

from diffx.errors import DataError
from diffx.section import Section


class PickChannel(Section):
    """Keep one channel of a multi-channel file for a 1-channel modality (0 = the first)."""

    pick: int = Field(ge=0, le=3)


ChannelRule = Literal["strict", "mean"] | PickChannel


def _dotted(value: str) -> str:
    if not value.startswith(".") or len(value) < 2:
        raise ValueError(f"expected a file extension with its dot, e.g. '.{value.lstrip('.') or 'png'}'")
    return value


Extension = Annotated[str, AfterValidator(_dotted)]  # '.png': file names are id + extension, so 'png' finds 'I0png'


class ReaderOptions(Section):
    """The base of every ``ingest.source`` section."""

    channels: dict[str, ChannelRule] = Field(
        default_factory=dict,
        description="modality -> how a 3/4-channel file becomes a 1-channel modality: strict (default: only grey "
        "stored as equal channels), mean (average the colour channels, rounded), or {pick: N}",
    )


def apply_channel_rule(array: np.ndarray, rule: ChannelRule, modality: str, source: str) -> np.ndarray:
    """Reduce an HxWxC array for a 1-channel modality by ``rule``; 'strict' leaves it to the contract check."""
    if array.ndim != 3 or rule == "strict":
        return array
    if isinstance(rule, PickChannel):
        if rule.pick >= array.shape[2]:
            count = array.shape[2]
            raise DataError(source, f"channels.{modality}: pick {rule.pick} but the file has {count} channels")
        return np.ascontiguousarray(array[..., rule.pick])
    colour = array[..., :3]  # 'mean' averages colour, never an alpha plane
    mean = colour.astype(np.float32).mean(axis=2)
    return np.rint(mean).astype(array.dtype)


# ------------------------------------------------------------------------------------- file names
def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_template(template: str, allowed: set[str], where: str) -> None:
    """A template naming an unknown field fails when the params are read, not on the first sample."""
    unknown = template_fields(template) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} in {template!r}; use {sorted(allowed)}")


def check_templates(value: str | dict[str, str] | None, allowed: set[str]) -> str | dict[str, str] | None:
    """For a ``filename_template`` field validator: one template or one per modality, all checked."""
    for template in [] if value is None else [value] if isinstance(value, str) else value.values():
        check_template(template, allowed, "filename_template")
    return value


def per_modality(template: str | dict[str, str], modalities: list[str] | tuple[str, ...], where: str) -> dict[str, str]:
    """One template for every modality, or one each: a dict must name them all."""
    if isinstance(template, str):
        return {m: template for m in modalities}
    missing = [m for m in modalities if m not in template]
    if missing:
        raise DataError(where, f"no file-name template for modality {missing}; give one per modality or one string")
    return {m: template[m] for m in modalities}


def id_from_file_name(name: str, template: str) -> str | None:
    """The ``{id}`` a file name was made from by ``template`` (e.g. 'I0001_lwir.png' by '{id}_lwir.png')."""
    head, sep, tail = template.partition("{id}")
    if not sep or "{" in head or "{" in tail:
        raise DataError(template, "a listing template must contain {id} once and no other field")
    if len(name) <= len(head) + len(tail) or not (name.startswith(head) and name.endswith(tail)):
        return None
    return name[len(head) : len(name) - len(tail)] if tail else name[len(head) :]


def stem_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def path_id(path: str) -> str:
    return os.path.splitext(os.path.normpath(path).replace("\\", "/").lstrip("/"))[0]


def sample_ids(paths: list[str], rule: Literal["auto", "stem", "path"] = "auto") -> list[str]:
    """Sample ids from file paths: the base name without extension (stem), the relative path without extension
    (path), or auto: stems unless two files share one, then paths for all (KAIST's set08/V000/I02159 and
    set08/V001/I02159 would otherwise collide)."""
    stems = [stem_id(p) for p in paths]
    if rule == "stem" or (rule == "auto" and len(set(stems)) == len(stems)):
        return stems
    return [path_id(p) for p in paths]

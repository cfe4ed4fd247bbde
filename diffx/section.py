"""The base of every settings section: unknown keys fail, and (on request) every read is recorded.

Its own module so the source readers can declare their option sections next to their code
(diffx/data/readers/*.py) while diffx/config/ gathers all sections into the one typed configuration.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

RECORD_ENV = "DIFFX_RECORD_PARAMS"


class _ReadRecorder:
    """With $DIFFX_RECORD_PARAMS set to a folder, every setting a process reads is written there at exit, as
    dotted keys. tests/test_dvc_pipeline.py runs the chain this way and compares the reads of each stage with
    the params dvc.yaml declares for it, so DVC can never miss a key a stage depends on."""

    def __init__(self) -> None:
        self.folder = os.environ.get(RECORD_ENV)
        self.keys: set[str] = set()
        if self.folder:
            atexit.register(self.flush)

    paused = False

    def add(self, key: str) -> None:
        if not self.paused:
            self.keys.add(key)

    def add_all(self, section: BaseModel) -> None:
        prefix = section.__pydantic_private__.get("_dotted", "") if section.__pydantic_private__ else ""
        for name in type(section).model_fields:
            value = section.__dict__[name]
            if isinstance(value, Section):
                self.add_all(value)
            else:
                self.add(prefix + name)

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Validation reads every key; what counts is what the stage reads afterwards."""
        self.paused, before = True, self.paused
        try:
            yield
        finally:
            self.paused = before

    def flush(self) -> None:
        if not self.keys or not self.folder:
            return
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        record = {"argv": sys.argv[1:], "keys": sorted(self.keys)}
        (Path(self.folder) / f"{os.getpid()}.json").write_text(json.dumps(record))


RECORDER = _ReadRecorder()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _dotted: str = PrivateAttr(default="")

    if RECORDER.folder:

        def __getattribute__(self, name: str) -> Any:
            if not name.startswith("_") and name in type(self).model_fields:
                RECORDER.add(self.__pydantic_private__.get("_dotted", "") + name)
            elif name == "model_dump":  # a dump hands every setting below on (a digest, a provenance record)
                RECORDER.add_all(self)
            return super().__getattribute__(name)


# ------------------------------------------------------------------------------------- strict scalars
def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types among a field's annotation (``int | None`` -> {int})."""
    if annotation in (int, float, bool):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_scalar_kinds(arg) for arg in typing.get_args(annotation)))
    return set()


def sections_in(annotation: Any, value: dict[str, Any]) -> list[type[BaseModel]]:
    """The section classes a mapping may be validated as; for a union of readers, the one its ``format`` names."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = [c for arg in typing.get_args(annotation) for c in sections_in(arg, value)]
    if len(found) > 1 and "format" in value:
        found = [c for c in found if "format" in c.model_fields and c.model_fields["format"].default == value["format"]]
    return found


def guessed_scalars(model: type[BaseModel], raw: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, problem) for every boolean given for a number and every non-boolean given for a boolean.

    Pydantic's lax mode would take them (YAML 1.1 reads yes/no/on/off as booleans, so ``workers: yes`` became 1)."""
    if not isinstance(raw, dict):
        return []
    found = []
    for key, value in raw.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        kinds = _scalar_kinds(field.annotation)
        if isinstance(value, bool) and bool not in kinds and kinds & {int, float}:
            found.append(
                (prefix + key, f"expected a number, got the boolean {value!r} (YAML reads yes/no/on/off as booleans)")
            )
        elif kinds == {bool} and value is not None and not isinstance(value, bool):
            found.append((prefix + key, f"expected true or false, got {value!r}"))
        elif isinstance(value, dict):
            for section in sections_in(field.annotation, value)[:1]:
                found += guessed_scalars(section, value, f"{prefix}{key}.")
    return found

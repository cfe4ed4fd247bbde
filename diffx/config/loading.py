"""How settings enter a run: params files, overlays (presets) and dotted overrides, validated every time, with
errors that name the file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from diffx.config.data import IngestConfig
from diffx.config.root import DiffxConfig
from diffx.errors import ConfigError
from diffx.section import RECORDER, guessed_scalars, sections_in


def _where(loc: str, lines: dict[str, str]) -> str:
    """`` (params.yaml:12)`` for a dotted key (or its nearest parent) the files set, else nothing."""
    parts = loc.split(".")
    for end in range(len(parts), 0, -1):
        if (found := lines.get(".".join(parts[:end]))) is not None:
            return f" ({found})"
    return ""


def _format_validation_error(source: str, err: ValidationError, lines: dict[str, str]) -> str:
    out = [f"{source}: invalid configuration"]
    formats = {
        c.model_fields["format"].default for c in sections_in(IngestConfig.model_fields["source"].annotation, {})
    }
    for item in err.errors():
        parts = [str(p) for p in item["loc"]]
        # the reader union adds its tag to the path (ingest.source.voc_pairs.extension): say it as it is written
        parts = [p for i, p in enumerate(parts) if not (i and parts[i - 1] == "source" and p in formats)]
        loc = ".".join(parts)
        if item["type"] == "extra_forbidden":
            out.append(f"  {loc}: unknown key{_where(loc, lines)}")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            message = item["msg"].removeprefix("Value error, ")
            out.append(f"  {loc}: {message}{shown}{_where(loc, lines)}")
    return "\n".join(out)


def parse_config(raw: dict[str, Any], source: str = "<params>", lines: dict[str, str] | None = None) -> DiffxConfig:
    """``lines``: dotted key -> 'file:line', so an error points into the file that set the key."""
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    if guessed := guessed_scalars(DiffxConfig, raw):
        problems = [f"  {key}: {problem}{_where(key, lines)}" for key, problem in guessed]
        raise ConfigError("\n".join([f"{source}: invalid configuration", *problems]))
    try:
        with RECORDER.pause():
            config = DiffxConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err, lines)) from None
    return config


def key_lines(path: str | Path) -> dict[str, str]:
    """Dotted key -> 'file:line' for every mapping key of a params file (read after read_params accepted it)."""
    found: dict[str, str] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}{key_node.value}"
                found[dotted] = f"{path}:{key_node.start_mark.line + 1}"
                walk(value_node, dotted + ".")

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return found
    if root is not None:
        walk(root, "")
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that a mapping repeats: PyYAML keeps the last silently, so a second
    ``vae:`` block pasted below the first would replace it whole."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a params YAML file (e.g. params.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merge key by key, anything else replaces.

    A mapping naming another ``format`` (a reader) is another kind of thing: it replaces the base's whole, so a
    preset's FLIR source never inherits the demo reader's options; an empty mapping clears (``class_targets: {}``).
    """
    out = dict(base)
    for key, value in overlay.items():
        current = out.get(key)
        kind = current.get("format") if isinstance(current, dict) else None
        if isinstance(value, dict) and value and isinstance(current, dict) and value.get("format", kind) == kind:
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


def dotted_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"plan.num_samples": 8}`` -> ``{"plan": {"num_samples": 8}}`` (what ``dvc exp run -S`` writes)."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is set to a value and a section at once")
        node[leaf] = value
    return nested


def load_config(
    path: str | Path = "params.yaml",
    overlays: list[str | Path] | tuple[str | Path, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> DiffxConfig:
    """The one way settings enter a run: a params file, then overlay files (presets), then dotted overrides
    (CLI flags, flow parameters), validated together so an override can never skip a check."""
    raw = read_params(path)
    sources = [str(path)]
    lines = key_lines(path)
    for overlay in overlays:
        raw = merge(raw, read_params(overlay))
        sources.append(str(overlay))
        lines.update(key_lines(overlay))
    if overrides:
        raw = merge(raw, dotted_overrides(overrides))
        sources.append("overrides " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
        lines.update({key: "--set" for key in overrides})
    return parse_config(raw, " + ".join(sources), lines)


def with_overrides(config: DiffxConfig, overrides: dict[str, Any]) -> DiffxConfig:
    """A validated copy of ``config`` with dotted overrides applied (never mutate a loaded config)."""
    if not overrides:
        return config
    with RECORDER.pause():
        raw = merge(config.model_dump(mode="json"), dotted_overrides(overrides))
    return parse_config(raw, "overrides " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))

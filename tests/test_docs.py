"""The docs say what the code is: the chain picture is `dvc dag`, the layer table is what the imports obey."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _between(text: str, name: str) -> str:
    found = re.search(rf"<!-- {name}: begin -->\n(.*?)<!-- {name}: end -->", text, re.S)
    assert found, f"docs/architecture.md has no '{name}' block"
    return found.group(1)


def _layers() -> dict[str, int]:
    layers = {}
    for row in _between(ARCHITECTURE.read_text(), "layers").splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for module in re.findall(r"`([\w.]+)`", cells[1]):
                layers[module] = int(cells[0])
    return layers


def _layer_of(module: str, layers: dict[str, int]) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in layers:
            return layers[".".join(parts[:end])]
    return None


def _imports(path: Path) -> set[str]:
    """diffx modules a file imports, TYPE_CHECKING blocks aside (a type hint runs nothing)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffx"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n if n.split(".")[-1][:1].islower() else node.module for n in names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("diffx")}
    return found


def _upward(path: Path, own_module: str, layers: dict[str, int]) -> set[str]:
    """The modules ``path`` (module ``own_module``) imports from a layer above its own."""
    own = _layer_of(own_module, layers)
    assert own is not None, f"{own_module} is in no layer of docs/architecture.md"
    upward = set()
    for module in _imports(path):
        target = _layer_of(module, layers)
        if target is not None and target > own:
            upward.add(_module_file(module))
    return upward


def _back_imports() -> set[tuple[str, str]]:
    layers = _layers()
    found = set()
    for path in sorted((REPO / "diffx").rglob("*.py")):
        own_module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        found |= {(str(path.relative_to(REPO)), module) for module in _upward(path, own_module, layers)}
    return found


def _module_file(module: str) -> str:
    """``diffx.metrics.grids.grid_png`` -> ``diffx.metrics.grids``: the module, not the name imported from it."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = REPO.joinpath(*parts[:end])
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts[:end])
    return module


def test_no_import_runs_up_the_layers() -> None:
    """The layers of docs/architecture.md, obeyed by every module: no exemptions (the five that ran upward
    before the stage and metrics layers existed are gone)."""
    found = sorted(_back_imports())
    assert not found, f"imports that run up the layers (docs/architecture.md): {found}"


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\nfrom diffx.errors import DataError\n"
        "from diffx.stages.train_unet import run\n"
        "if TYPE_CHECKING:\n    from diffx.stages.evaluate import evaluate\n"
    )
    assert _upward(planted, "diffx.shards.planted", _layers()) == {
        "diffx.stages.train_unet"
    }  # not errors; not a type hint


def test_the_chain_picture_is_dvc_dag() -> None:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc is not installed")
    drawn = subprocess.run([dvc, "dag", "--mermaid"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    block = _between(ARCHITECTURE.read_text(), "dvc dag")
    assert block.strip() == f"```mermaid\n{drawn.strip()}\n```", (
        "docs/architecture.md's chain differs from `dvc dag --mermaid`: paste its output between the markers"
    )


def _results_hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_hook", REPO / "docs" / "hooks" / "results.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_results_page_shows_the_committed_metrics(tmp_path: Path) -> None:
    """The Results page's first table is built from metrics/ at build time: it follows every relock."""
    import json

    hook = _results_hook()
    assert hook.MARKER in (REPO / "docs" / "demo-results.md").read_text()
    (tmp_path / "metrics").mkdir()
    for name in ("vae.json", "unet.json", "eval.json"):
        (tmp_path / "metrics" / name).write_text((REPO / "metrics" / name).read_text())
    evaluation = json.loads((REPO / "metrics" / "eval.json").read_text())
    table = hook.committed_table(tmp_path)
    assert f"{evaluation['layout_fidelity_map50']['generated']:.4f} / " in table
    evaluation["layout_fidelity_map50"]["generated"] = 0.4321  # a relock that moves a metric moves the page
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps(evaluation))
    assert "0.4321 / " in hook.committed_table(tmp_path)
    page = hook.on_page_markdown(f"x\n{hook.MARKER}\ny", None, {"docs_dir": str(tmp_path / "docs")}, None)
    assert "| metric (the committed `dvc.lock`) | value |" in page and hook.MARKER not in page

"""The real DVC pipeline on a copy of this repo's working tree: gates stop the chain, `dvc exp run` reruns only
what depends on a changed param, and the Prefect chain writes what `dvc repro` writes.

Runs the actual `dvc` and `diffx` executables of this environment (skipped when dvc is not installed). What a
user gets from `git clone` is tested by test_fresh_clone.py; these tests take the working tree, so they also
check uncommitted changes.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from PIL import Image

from diffx.config import OUTPUT_KEYS, load_config
from diffx.section import RECORD_ENV, Section
from diffx.shards.validate import validate_shard_set

from . import tiny_chain
from .conftest import REPO
from .tiny_chain import BIN
from .tiny_chain import run as _run


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    if not (BIN / "dvc").exists():
        pytest.skip("dvc is not installed in this environment")
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", "data.dvc", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, work / name)
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.copytree(REPO / "dvc-remote", work / "dvc-remote")
    shutil.copytree(REPO / "diffx", work / "diffx", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "reviews").mkdir()
    shutil.copy2(REPO / "reviews" / "decisions.jsonl", work / "reviews" / "decisions.jsonl")
    (work / "data").mkdir()
    shutil.copy2(REPO / "data" / ".gitignore", work / "data" / ".gitignore")
    params = tiny_chain.apply(yaml.safe_load((work / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(work, "git", "init", "-q")
    return work


@pytest.mark.slow  # runs dvc on a copy of the repository
def test_a_planted_defect_stops_the_chain_at_its_gate(repo_copy: Path) -> None:
    _run(repo_copy, "dvc", "pull", "-q", "data.dvc")
    frame = repo_copy / "data" / "demo" / "thermal" / "demo-train-00005.png"
    Image.new("L", Image.open(frame).size, 87).save(frame)  # a dead thermal sensor: valid PNG, blank content
    out = _run(repo_copy, "dvc", "repro", ok=False)
    assert "Running stage 'ingest'" in out and "Running stage 'check_ingest'" in out
    assert "Running stage 'train_vae'" not in out
    assert "thermal_std" in out and "demo-train-00005" in out and "blank or constant image" in out
    report = json.loads((repo_copy / "reports" / "quality" / "ingest.json").read_text())
    assert not report["success"] and not (repo_copy / "models" / "vae").exists()


@pytest.mark.slow  # runs dvc on a copy of the repository
def test_exp_run_with_a_changed_param_reruns_only_what_depends_on_it(repo_copy: Path, tmp_path: Path) -> None:
    _run(repo_copy, "dvc", "pull", "-q", "data.dvc")
    reads = tmp_path / "reads"
    _run(repo_copy, "dvc", "repro", env={RECORD_ENV: str(reads)})
    _assert_stages_declare_what_they_read(repo_copy, reads)
    _run(repo_copy, "git", "add", "-A")
    _run(repo_copy, "git", "commit", "-qm", "baseline")
    out = _run(repo_copy, "dvc", "exp", "run", "-S", "plan.num_samples=9")
    ran = {
        stage
        for stage in (
            "ingest",
            "caption",
            "refine",
            "train_vae",
            "train_unet",
            "plan",
            "generate",
            "check_generated",
            "curate",
            "evaluate",
        )
        if f"Running stage '{stage}'" in out
    }
    assert ran == {"plan", "generate", "check_generated", "curate", "evaluate"}, out
    assert validate_shard_set(str(repo_copy / "data" / "synthetic")).rows == 9
    shown = _run(repo_copy, "dvc", "metrics", "show", "--json")
    assert "metrics/vae.json" in shown and "metrics/quality/generated.json" in shown and "metrics/eval.json" in shown
    assert "reports/generate.json" not in shown  # a run report (timings), not a metric
    plots = _run(repo_copy, "dvc", "plots", "show", "--json")
    assert "pr_synthetic_1x.csv" in plots and "unet_loss.csv" in plots
    assert '"recipe": "curated_1x", "class": "all", "gain_map50"' in plots  # the recipe gain chart


def _resolve(entry: str, value: Callable[[str], object]) -> str:
    """``${quality.reports}/ingest.json`` -> ``reports/quality/ingest.json``, as DVC interpolates it."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(value(m.group(1))), entry)


def _assert_stages_declare_what_they_read(repo: Path, reads: Path) -> None:
    """Every setting a stage's process read is declared in its params (or is a path in its deps/outs), and every
    declared param is read: DVC reruns a stage exactly when something it depends on changed."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    by_cmd = {" ".join(stage["cmd"].split()): name for name, stage in stages.items()}
    seen: dict[str, set[str]] = {}
    for record in reads.glob("*.json"):
        data = json.loads(record.read_text())
        name = by_cmd.get(" ".join(["diffx", *data["argv"]]))
        if name is not None:
            seen.setdefault(name, set()).update(data["keys"])
    assert set(seen) == set(stages), f"no reads recorded for {sorted(set(stages) - set(seen))}"

    def value(key: str) -> object:
        node: object = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None  # type: ignore[union-attr]
        return node

    typed = load_config(repo / "params.yaml")

    def is_section(key: str) -> bool:
        node: object = typed
        for part in key.split("."):
            node = getattr(node, part, None)
        return isinstance(node, Section)

    problems = []
    for name, keys in sorted(seen.items()):
        stage = stages[name]
        declared = [p for p in stage.get("params", []) if isinstance(p, str)]
        entries = stage.get("deps", []) + stage.get("outs", []) + stage.get("metrics", [])
        paths = {_resolve(str(next(iter(e))) if isinstance(e, dict) else str(e), value) for e in entries}
        leaves = {k for k in keys if not is_section(k)}
        for key in sorted(leaves):
            if any(key == d or key.startswith(d + ".") for d in declared):
                continue
            if key.rsplit(".", 1)[-1] in OUTPUT_KEYS or (isinstance(value(key), str) and value(key) in paths):
                continue  # a path the stage writes, or reads as a dep: DVC hashes the files themselves
            problems.append(f"{name}: reads {key}, not in its params")
        for d in declared:  # a null setting is read only when switched on (caption.lmm with backend lmm)
            if value(d) is not None and not any(k == d or k.startswith(d + ".") for k in leaves):
                problems.append(f"{name}: declares {d}, which it never reads")
    assert not problems, "\n".join(problems)


def _tree_digests(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    import hashlib

    out = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix in (".parquet", ".safetensors"):
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.slow  # runs dvc on a copy of the repository
def test_prefect_chain_flow_produces_what_dvc_repro_produces(
    repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("prefect")
    twin = tmp_path / "twin"
    shutil.copytree(repo_copy, twin)
    _run(repo_copy, "dvc", "pull", "-q", "data.dvc")
    _run(repo_copy, "dvc", "repro")
    _run(twin, "dvc", "pull", "-q", "data.dvc")
    from flows.chain import chain_flow

    monkeypatch.chdir(twin)
    result = chain_flow(params="params.yaml")
    assert result["gate_generated"] is True
    folders = ("data/canonical", "data/captioned", "models/vae", "models/unet", "data/synthetic", "models/detector")
    dvc_outputs, flow_outputs = _tree_digests(repo_copy, folders), _tree_digests(twin, folders)
    assert len(dvc_outputs) >= 14 and flow_outputs == dvc_outputs
    assert (twin / "metrics" / "eval.json").read_bytes() == (repo_copy / "metrics" / "eval.json").read_bytes()


# ------------------------------------------------------------------------ dvc.yaml against the code
# Modules that type, wire or write settings and files but change no result: not stage deps (dvc.yaml's header).
NOT_DEPS = {
    "diffx/__init__.py",
    "diffx/config/",
    "diffx/errors.py",
    "diffx/fsio.py",
    "diffx/cli.py",
    "diffx/stages/__init__.py",
    "diffx/stages/guard.py",
    "diffx/section.py",
}


def _not_a_dep(rel: str) -> bool:
    return any(rel == entry or (entry.endswith("/") and rel.startswith(entry)) for entry in NOT_DEPS)


def _module_file(name: str) -> Path | None:
    for candidate in (REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _diffx_imports(tree: ast.AST) -> set[str]:
    """Every diffx module a file imports, at the top or inside functions (lazy imports are code deps too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("diffx"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("diffx"):
            found.add(node.module)  # type: ignore[arg-type]
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
    return found


def _import_closure(modules: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        path = _module_file(todo.pop())
        if path is None:
            continue
        rel = path.relative_to(REPO).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        if not _not_a_dep(rel):
            todo.extend(_diffx_imports(ast.parse(path.read_text())))
    return {m for m in seen if not _not_a_dep(m) and not m.endswith("__init__.py")}


def _stage_modules() -> dict[str, set[str]]:
    """Stage command -> its module in diffx/stages/ (the stage's entry point, itself a dep)."""
    return {path.stem: {f"diffx.stages.{path.stem}"} for path in (REPO / "diffx" / "stages").glob("*.py")}


def _stage_function(cmd: str) -> str:
    words = cmd.split()
    assert words[0] == "diffx", cmd
    return words[1].replace("-", "_")


def test_every_stage_declares_the_code_it_imports_and_nothing_else() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    entry = _stage_modules()
    problems = []
    for name, stage in stages.items():
        closure = _import_closure(entry[_stage_function(stage["cmd"])])
        declared = [d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("diffx")]
        covered = {m for m in closure if any(m == d or m.startswith(d.rstrip("/") + "/") for d in declared)}
        problems += [f"{name}: imports {m}, not a dep" for m in sorted(closure - covered)]
        for dep in declared:
            if not any(m == dep or m.startswith(dep.rstrip("/") + "/") for m in closure):
                problems.append(f"{name}: declares {dep}, which it never imports")
    assert not problems, "\n".join(problems)

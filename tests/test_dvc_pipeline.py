"""The real DVC pipeline on a copy of this repo's working tree: gates stop the chain, `dvc exp run` reruns only
what depends on a changed param, and the Prefect chain writes what `dvc repro` writes.

Runs the actual `dvc` and `diffx` executables of this environment (skipped when dvc is not installed). What a
user gets from `git clone` is tested by test_fresh_clone.py; these tests take the working tree, so they also
check uncommitted changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

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


def test_exp_run_with_a_changed_param_reruns_only_what_depends_on_it(repo_copy: Path) -> None:
    _run(repo_copy, "dvc", "pull", "-q", "data.dvc")
    _run(repo_copy, "dvc", "repro")
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
            "evaluate",
        )
        if f"Running stage '{stage}'" in out
    }
    assert ran == {"plan", "generate", "check_generated", "evaluate"}, out
    assert validate_shard_set(str(repo_copy / "data" / "synthetic")).rows == 9
    shown = _run(repo_copy, "dvc", "metrics", "show", "--json")
    assert "metrics/vae.json" in shown and "metrics/quality/generated.json" in shown and "metrics/eval.json" in shown
    assert "reports/generate.json" not in shown  # a run report (timings), not a metric
    plots = _run(repo_copy, "dvc", "plots", "show", "--json")
    assert "pr_real_synthetic.csv" in plots and "unet_loss.csv" in plots


def _tree_digests(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    import hashlib

    out = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix in (".parquet", ".safetensors"):
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


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

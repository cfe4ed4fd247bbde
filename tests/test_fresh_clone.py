"""What a new user gets: `git clone` of the committed HEAD, `dvc pull`, the whole chain, a no-op rerun.

The clone holds exactly the git-tracked files, `.gitignore`s and `dvc.lock` of the last commit, so a stage output
committed to git ("already tracked by SCM"), a `dvc.lock` that no longer matches the code, or an output that
is neither ignored nor tracked fails here as it would for the user. The chain runs at smoke-test size through
`dvc exp run -S ...` (tests/tiny_chain.py), as a user trying a change would.

Uncommitted changes are not in the clone: commit before trusting this test (CI runs it on a clean clone).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from diffx.config import DemoConfig
from diffx.shards.validate import validate_shard_set

from . import tiny_chain
from .conftest import REPO
from .tiny_chain import BIN
from .tiny_chain import run as _run

DEMO_FRAMES = sum(DemoConfig().splits.values())  # the bundled demo data, as params.yaml describes it
STAGES = (
    "ingest",
    "check_ingest",
    "caption",
    "refine",
    "check_captions",
    "train_vae",
    "check_vae",
    "train_unet",
    "plan",
    "generate",
    "check_generated",
    "evaluate",
)
CACHED_OUTPUT_STAGES = ("ingest", "caption", "refine", "train_vae", "train_unet", "plan", "generate", "evaluate")
TIMING_KEYS = ("seconds", "samples_per_second", "train_samples_per_second", "cached", "model_share")


def _needs_git_checkout() -> None:
    if not (BIN / "dvc").exists():
        pytest.skip("dvc is not installed in this environment")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")


def _cached_outs() -> list[str]:
    """Every path DVC caches (stage outs with cache: true, and .dvc files), from DVC's own reading of dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return sorted(
            str(Path(out.fs_path).relative_to(REPO))
            for stage in repo.index.stages
            for out in stage.outs
            if out.use_cache
        )


def test_no_dvc_output_is_tracked_by_git() -> None:
    """A cached DVC output in git breaks `dvc repro` on every fresh clone ("output ... is already tracked by SCM").

    Metrics and reports declared with `cache: false` are meant to be in git (DVC's own convention), so they pass.
    """
    _needs_git_checkout()
    outs = _cached_outs()
    assert {"data/demo", "data/canonical", "data/plan.parquet", "models/vae", "data/synthetic"} <= set(outs)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    clashes = sorted(f for f in tracked for o in outs if f == o or f.startswith(o + "/"))
    assert not clashes, f"DVC outputs tracked by git (git rm --cached them): {clashes}"


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_git_checkout()
    clone = tmp_path_factory.mktemp("fresh") / "diffx"
    _run(REPO.parent, "git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone))
    _run(clone, "dvc", "pull", "-q", "data.dvc")
    assert len(list((clone / "data" / "demo" / "rgb").glob("*.png"))) == DEMO_FRAMES
    return clone


def _changed_code_or_params(status: dict[str, Any]) -> dict[str, Any]:
    """From `dvc status --json`: deps that were modified and params that changed; missing outputs are fine."""
    found: dict[str, Any] = {}
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                found[stage] = change  # e.g. "changed checksum": dvc.yaml itself differs from the lock
                continue
            deps = {p: s for p, s in change.get("changed deps", {}).items() if s != "deleted"}
            if deps:
                found.setdefault(stage, {})["deps"] = deps
            if change.get("changed params"):
                found.setdefault(stage, {})["params"] = change["changed params"]
    return found


def test_the_committed_lock_matches_the_committed_code_and_params(fresh_clone: Path) -> None:
    """On a fresh clone only outputs are missing: no stage reruns because code or params moved past the lock."""
    bytecode = fresh_clone / "diffx" / "data" / "__pycache__"  # what importing the clone's diffx leaves behind
    bytecode.mkdir(exist_ok=True)
    (bytecode / "ingest.cpython-311.pyc").write_bytes(b"not source")
    status = json.loads(_run(fresh_clone, "dvc", "status", "--json"))
    assert status, "a fresh clone has no outputs yet, so dvc status must list them"
    stale = _changed_code_or_params(status)
    assert not stale, f"dvc.lock is stale against the committed code/params (run `dvc repro` and commit): {stale}"


def _metric_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _metric_keys(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


@pytest.mark.slow  # the whole chain on a git clone, ~90 s
def test_the_whole_chain_runs_on_a_fresh_clone(fresh_clone: Path) -> None:
    shipped_lock = yaml.safe_load((fresh_clone / "dvc.lock").read_text())
    out = _run(fresh_clone, "dvc", "exp", "run", *tiny_chain.set_args(), timeout=1200)
    for stage in STAGES:
        ran, skipped = f"Running stage '{stage}'" in out, f"Stage '{stage}' didn't change, skipping" in out
        assert ran or skipped, f"{stage} neither ran nor was up to date:\n{out[-4000:]}"
    # Stages with cached outputs have nothing on a fresh clone, so they run. A gate whose input comes out
    # byte-identical to the committed run (ingest, captions) may be skipped: its report is in git and matches.
    for stage in (*CACHED_OUTPUT_STAGES, "check_vae", "check_generated"):
        assert f"Running stage '{stage}'" in out, f"{stage} did not run:\n{out[-4000:]}"
    # progress lines reach the dvc log with step/total, loss, rate and ETA (no tqdm bar under --no-progress)
    for desc in ("train mpvae", "train unet", "generate (rank 0/1)", "train detector (real)"):
        assert any(line.count(desc + ":") and "ETA" in line for line in out.splitlines()), f"no progress: {desc}"
    assert any("train mpvae: 2/2 steps" in line and "loss" in line for line in out.splitlines())

    assert validate_shard_set(str(fresh_clone / "data" / "canonical")).rows == DEMO_FRAMES
    synthetic = validate_shard_set(str(fresh_clone / "data" / "synthetic"))
    assert synthetic.ok and synthetic.rows == 6
    assert set(json.loads((fresh_clone / "metrics" / "eval.json").read_text())) >= {"fid", "map50", "recipe_gain_map50"}
    assert (fresh_clone / "reports" / "quality" / "docs" / "index.html").is_file(), "great_expectations data docs"

    lock = yaml.safe_load((fresh_clone / "dvc.lock").read_text())

    def canonical_md5(doc: dict[str, Any]) -> str:
        return next(o["md5"] for o in doc["stages"]["ingest"]["outs"] if o["path"] == "data/canonical")

    assert canonical_md5(lock) == canonical_md5(shipped_lock), "a fresh run reproduces the committed shards exactly"

    # headline numbers only: no timings or cache counts among the metrics (they live in reports/)
    shown = json.loads(_run(fresh_clone, "dvc", "metrics", "show", "--json"))
    keys = [k for files in shown.values() for doc in files["data"].values() for k in _metric_keys(doc.get("data"))]
    assert keys and not [k for k in keys if k.rsplit(".", 1)[-1] in TIMING_KEYS], keys
    assert len(keys) < 120, f"{len(keys)} metric columns: keep dvc exp show readable"

    # every output is either ignored (DVC's cache) or a tracked metric/report: nothing left untracked
    untracked = _run(fresh_clone, "git", "status", "--porcelain", "--untracked-files=all")
    assert not [line for line in untracked.splitlines() if line.startswith("??")], untracked

    again = _run(fresh_clone, "dvc", "repro")
    assert "Running stage" not in again, again
    assert "up to date" in _run(fresh_clone, "dvc", "status")

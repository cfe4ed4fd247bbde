"""Prefect flows in ephemeral mode (offline): the caption flow, and its pause for a review in the UI/API."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prefect")

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from diffx.caption.decisions import read_decisions
from diffx.caption.queue import read_queue
from diffx.data.demo import write_demo
from diffx.shards.reader import ShardSet
from diffx.stages import ingest
from flows.captions import caption_flow

from .conftest import make_config


@pytest.fixture
def params(tmp_path: Path) -> Path:
    import yaml

    write_demo(str(tmp_path / "raw"), seed=4, width=64, height=48, splits={"train": 8, "val": 2})
    config = make_config(tmp_path / "raw", tmp_path / "canonical")
    ingest.run(config, progress=False)
    raw: dict[str, Any] = config.model_dump(mode="json")
    raw["caption"].update(
        data=str(tmp_path / "canonical"),
        output=str(tmp_path / "captions.parquet"),
        report=str(tmp_path / "caption.json"),
        cache=None,
    )
    raw["refine"].update(
        data=str(tmp_path / "canonical"),
        captions=str(tmp_path / "captions.parquet"),
        decisions=str(tmp_path / "decisions.jsonl"),
        output=str(tmp_path / "captioned"),
        queue=str(tmp_path / "queue.jsonl"),
        report=str(tmp_path / "refine.json"),
        near_duplicate=0.3,
    )  # street-scene templates overlap: makes a review queue
    raw["quality"].update(reports=str(tmp_path / "quality"), metrics=str(tmp_path / "quality-metrics"), docs=None)
    raw["quality"]["captions"]["max_unresolved_share"] = 1.0  # the queue above is 70%: let it through to review
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_caption_flow_runs_the_library_stages(params: Path) -> None:
    result = caption_flow(params=str(params), interactive=False)
    assert result["gate"] is True and result["caption"]["rows"] == 10 and not result["review"]
    assert len(list(ShardSet(str(params.parent / "captioned")).iter_samples())) == 10
    assert read_queue(str(params.parent / "queue.jsonl"))  # flagged, waiting: the run did not stop for it


def _paused_run_id(timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            if runs:
                return runs[0].id
            time.sleep(0.5)
    raise AssertionError("the caption flow never paused for review")


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_interactive_run_pauses_for_review_and_applies_the_answer(params: Path) -> None:
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(caption_flow(params=str(params), interactive=True, review_timeout_s=240))
    )
    runner.start()
    run_id = _paused_run_id()
    queue = read_queue(str(params.parent / "queue.jsonl"))
    first, second = queue[0], queue[1]
    items = [
        {"id": q.id, "caption": q.caption, "flags": q.flags, "reviewed": q.reviewed, "action": "skip"} for q in queue
    ]
    items[0].update(action="edit", caption="An image of a reviewed street.")
    items[1].update(action="reject")
    resume_flow_run(run_id, run_input={"reviewer": "ui-test", "items": items})
    runner.join(timeout=240)
    assert not runner.is_alive() and outcome["review"]["edit"] == 1 and outcome["review"]["reject"] == 1
    decisions = read_decisions(params.parent / "decisions.jsonl")
    assert decisions[first.id].caption == "An image of a reviewed street." and decisions[first.id].reviewer == "ui-test"
    assert decisions[second.id].action == "reject"
    captions = {s.id: (s.caption, s.caption_source) for s in ShardSet(str(params.parent / "captioned")).iter_samples()}
    assert captions[first.id] == ("An image of a reviewed street.", "human")


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_generate_flow_maps_workers_and_completes_the_set(tmp_path: Path) -> None:
    import yaml

    from diffx.shards.validate import validate_shard_set
    from flows.generate import generate_flow

    from .test_generate import _params
    from .test_generate import world as world_fixture

    world = world_fixture.__wrapped__(_Factory(tmp_path))  # the tiny trained models of test_generate
    work = tmp_path / "flow"
    work.mkdir()
    raw = _params(world, work)
    raw["quality"] = lenient_generated_gate(work)
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = generate_flow(params=str(params), num_samples=8, workers=2, progress_every_s=0.2)
    assert result["final"]["complete"] and result["gate"] is True
    assert sum(r["samples_generated"] for r in result["workers"]) == 8
    assert validate_shard_set(str(work / "synthetic")).rows == 8
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (progress,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["generation-progress"])), limit=1
        )
    assert progress.data == 100.0 and progress.description.startswith("8/8 samples in 4/4 shards")


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_the_progress_watch_counts_shards_as_they_land(tmp_path: Path) -> None:
    from diffx.config import parse_config
    from diffx.stages import generate, plan
    from flows.progress import ShardWatch, describe

    from .test_generate import _params
    from .test_generate import world as world_fixture

    world = world_fixture.__wrapped__(_Factory(tmp_path))
    config = parse_config(_params(world, tmp_path / "work"))
    plan.run(config)
    watch = ShardWatch(config.generate)
    assert watch.poll()["samples_done"] == 0 and watch.poll()["eta_s"] is None
    generate.run(config, rank=0, world_size=2, progress=False)  # half the shards (indices 0, 2, 4)
    state = watch.poll()
    assert (state["shards_done"], state["shards"], state["samples_done"], state["samples"]) == (3, 6, 6, 12)
    assert state["samples_per_s"] > 0 and state["eta_s"] is not None and "6/12 samples" in describe(state)
    generate.run(config, rank=1, world_size=2, progress=False)
    assert watch.poll()["percent"] == 100.0 and watch.poll()["eta_s"] == 0


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_flow_parameters_are_validated_before_any_task(tmp_path: Path) -> None:
    """Flow parameters are overrides like any other: ``num_samples=-5`` fails in the load, naming the key."""
    from diffx.errors import ConfigError
    from flows.generate import generate_flow

    from .conftest import REPO

    with pytest.raises(ConfigError, match=r"plan\.num_samples"):
        generate_flow.fn(params=str(REPO / "params.yaml"), num_samples=-5, output_url=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def lenient_generated_gate(folder: Path) -> dict[str, Any]:
    """Quality params whose generated gate passes a 1-step model's noise (the floors are for the demo model)."""
    (folder / "ingest.json").write_text('{"reference_histograms": {}, "reference_means": {}}')
    return {
        "reports": str(folder / "quality"),
        "metrics": str(folder / "quality-metrics"),
        "docs": None,
        "generated": {
            "reference": str(folder / "ingest.json"),
            "max_hist_distance": 1.0,
            "max_mean_shift": 1.0,
            "min_honoured_share": 0.0,
            "min_std": 0.0,
            "min_nonzero_fraction": 0.0,
        },
    }


class _Factory:
    """Stands in for pytest's tmp_path_factory when calling the module fixture directly."""

    def __init__(self, base: Path):
        self.base = base

    def mktemp(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        return path


def test_prefect_yaml_deployments_load_and_validate() -> None:
    import yaml
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    from .conftest import REPO

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly-generation", "weekly-retrain"} <= names
    for deployment in spec["deployments"]:
        flow_obj = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        flow_obj.validate_parameters(deployment.get("parameters", {}))  # raises on an unknown or mistyped one
        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_nightly_deployment_starts_as_the_readme_says(tmp_path: Path) -> None:
    """A real Prefect server, work pool, `prefect deploy`, a triggered run and a process worker, as in the README."""
    import os
    import shutil
    import subprocess
    import sys
    import urllib.request

    import yaml

    from diffx.shards.validate import validate_shard_set

    from .conftest import REPO
    from .test_generate import _params
    from .test_generate import world as world_fixture

    world = world_fixture.__wrapped__(_Factory(tmp_path))
    repo = tmp_path / "repo"  # prefect.yaml + flows/, the working directory the deployment pulls into
    repo.mkdir()
    shutil.copy2(REPO / "prefect.yaml", repo / "prefect.yaml")
    shutil.copytree(REPO / "flows", repo / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    raw = _params(world, tmp_path / "work")
    raw["quality"] = lenient_generated_gate(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    output = tmp_path / "nightly"

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DIFFX_REPO": str(repo),
        "PYTHONPATH": str(repo),
    }

    def prefect(*args: str, timeout: int = 120) -> str:
        done = subprocess.run(
            [str(bin_dir / "prefect"), "--no-prompt", *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not come up in 120 s"
            time.sleep(1)
        prefect("work-pool", "create", "diffx", "--type", "process")
        prefect("deploy", "--name", "nightly-generation")
        started = prefect(
            "deployment",
            "run",
            "diffx-generate/nightly-generation",
            "-p",
            f"params={params}",
            "-p",
            "num_samples=6",
            "-p",
            "workers=1",
            "-p",
            f"output_url={output}",
            "-p",
            f"model={world / 'unet'}",
        )
        worker = prefect("worker", "start", "--pool", "diffx", "--run-once", timeout=600)
        run_id = next(line.split()[-1] for line in started.splitlines() if "UUID" in line)
        inspected = prefect("flow-run", "inspect", run_id)
        assert "COMPLETED" in inspected, worker[-4000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert validate_shard_set(str(output)).rows == 6


@pytest.mark.slow  # runs Prefect flows (temporary Prefect server)
def test_evaluate_flow_is_cached_on_its_inputs_and_remakes_missing_outputs(tmp_path: Path) -> None:
    import yaml

    from flows.evaluate import evaluate_flow

    from .test_generate import _params
    from .test_generate import world as world_fixture
    from .tiny_models import tiny_evaluate

    world = world_fixture.__wrapped__(_Factory(tmp_path))
    raw = _params(world, tmp_path / "work")
    raw["evaluate"] = tiny_evaluate(
        world / "captioned",
        tmp_path,
        synthetic=str(world / "captioned"),
        synthetic_split="val",
        kid_subset_size=2,
        detector_train={"steps": 2, "batch_size": 4, "ema_decay": None},
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    metrics = tmp_path / "eval.json"
    first = evaluate_flow(params=str(params))
    written = metrics.stat().st_mtime_ns
    assert evaluate_flow(params=str(params)) == first
    assert metrics.stat().st_mtime_ns == written  # cached: the stage did not run again
    metrics.unlink()
    assert evaluate_flow(params=str(params)) == first  # an output is gone: it runs and makes it again
    remade = metrics.stat().st_mtime_ns
    raw["evaluate"]["detector_train"]["steps"] = 3
    params.write_text(yaml.safe_dump(raw))
    evaluate_flow(params=str(params))
    assert metrics.stat().st_mtime_ns != remade  # a changed param is a changed key

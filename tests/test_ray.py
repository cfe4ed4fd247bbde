"""The generation flow on a Ray cluster (prefect-ray): a local head on 127.0.0.1 with two worker CPUs, a real
Prefect server, and the same shard bytes as the plain rank mode, also when a worker is killed mid-shard."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("prefect_ray")
pytest.importorskip("ray")

from diffx.config import parse_config
from diffx.stages import generate, plan

from .conftest import REPO
from .test_flows import _Factory, _free_port, lenient_generated_gate
from .test_generate import _params
from .test_generate import world as world_fixture

pytestmark = pytest.mark.slow  # a Prefect server and a Ray head on 127.0.0.1

BIN = Path(sys.executable).parent
DRIVER = """
import json, sys
from flows.generate import on_ray
result = on_ray(sys.argv[1])(params=sys.argv[2], workers=2)
lost = [r["failed"] for r in result["workers"] if "failed" in r]
print(json.dumps({"complete": result["final"]["complete"], "gate": result["gate"], "lost_workers": lost}))
"""


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "train").glob("part-*.parquet"))}


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up in {timeout:.0f}s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A Prefect server and a Ray head with 2 CPUs on 127.0.0.1; yields (ray address, environment)."""
    tmp = tmp_path_factory.mktemp("ray")
    prefect_port, ray_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PYTHONPATH": str(REPO),  # Ray workers import flows.tasks and diffx from the checkout
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",  # two workers on two cores: no OpenMP oversubscription
    }
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{ray_port}"
    try:
        subprocess.run(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={ray_port}",
                "--num-cpus=2",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={tmp / 'ray'}",
            ],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=180,
        )
        _wait_http(f"{env['PREFECT_API_URL']}/health", 180)
        yield address, env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        server.terminate()
        server.wait(timeout=60)


def _setup(tmp_path: Path, steps: int) -> tuple[Path, Path, Path]:
    """Tiny trained models, params for the Ray run, and the reference set made by the plain rank mode."""
    world = world_fixture.__wrapped__(_Factory(tmp_path))
    raw = _params(world, tmp_path / "ray-run")
    raw["generate"]["sampler"]["steps"] = steps
    raw["quality"] = lenient_generated_gate(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    reference = _params(world, tmp_path / "rank-run")
    reference["generate"]["sampler"]["steps"] = steps
    config = parse_config(reference)
    plan.run(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker of one CPU: float reductions depend on the thread count
    try:
        for rank in (0, 1):  # the rank mode, as two machines would run it
            generate.run(config, rank=rank, world_size=2, progress=False)
        generate.run(config, progress=False)  # writes the manifest
    finally:
        torch.set_num_threads(threads)
    return params, tmp_path / "ray-run" / "synthetic", tmp_path / "rank-run" / "synthetic"


def _driver(address: str, params: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, address, str(params)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(driver: subprocess.Popen[str], timeout: float) -> dict[str, bool]:
    out, err = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def test_the_generation_flow_on_ray_writes_the_rank_mode_bytes(cluster, tmp_path: Path) -> None:
    address, env = cluster
    params, ray_set, rank_set = _setup(tmp_path, steps=3)
    assert _finished(_driver(address, params, env), 600) == {"complete": True, "gate": True, "lost_workers": []}
    assert _digests(ray_set) == _digests(rank_set) and len(_digests(rank_set)) == 6


def test_a_worker_killed_mid_shard_is_retried_by_ray_and_the_set_still_matches(cluster, tmp_path: Path) -> None:
    address, env = cluster
    params, ray_set, rank_set = _setup(tmp_path, steps=60)  # slow enough to be caught inside a shard
    driver = _driver(address, params, env)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and driver.poll() is None:
        for lock in sorted((ray_set / "train").glob(".part-*.lock")) if (ray_set / "train").exists() else []:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                continue
            if holder.get("pid") and int(holder["pid"]) not in (os.getpid(), driver.pid):
                os.kill(int(holder["pid"]), signal.SIGKILL)  # the Ray worker process writing that shard
                killed = lock.name
                break
        time.sleep(0.05)
    assert killed, "no shard lease seen while the flow ran"
    # no lost worker: Ray re-ran the killed task, which took over the dead holder's lease and finished
    assert _finished(driver, 600) == {"complete": True, "gate": True, "lost_workers": []}
    assert _digests(ray_set) == _digests(rank_set)

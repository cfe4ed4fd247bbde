"""Shared fixtures. Everything is written by the tests themselves, except ../shared/realdata samples,
which are optional: tests that need them skip cleanly when the folder is absent."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Prefect in ephemeral mode, offline, with its state in a throw-away folder (DESIGN.md section 9).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="diffx-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

from diffx.config import DiffxConfig, parse_config
from diffx.data.demo import DEMO_SPEC, write_demo
from diffx.data.images import encode_png
from diffx.data.sample import Sample, make_object
from diffx.data.spec import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("DIFFX_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session", autouse=True)
def _stop_prefect_temporary_server() -> Any:
    """Stop Prefect's temporary server while pytest's streams are open (its atexit log would hit closed files)."""
    yield
    if "prefect.server.api.server" in sys.modules:
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().stop()


def _untracked_in_repo() -> set[str] | None:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None  # not a git checkout
    return {line[3:] for line in done.stdout.splitlines() if line.startswith("??")}


@pytest.fixture(scope="session", autouse=True)
def _verification_stamps_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Shard verification stamps (diffx/shards/reader.py) go to a session folder, not the user's cache; the
    subprocesses the tests start inherit it."""
    import os

    before = os.environ.get("DIFFX_VERIFIED_CACHE")
    os.environ["DIFFX_VERIFIED_CACHE"] = str(tmp_path_factory.mktemp("verified"))
    yield
    if before is None:
        os.environ.pop("DIFFX_VERIFIED_CACHE", None)
    else:
        os.environ["DIFFX_VERIFIED_CACHE"] = before


@pytest.fixture(scope="session", autouse=True)
def _tests_write_nothing_into_the_repo() -> Any:
    """Every test writes under tmp: a default output path (e.g. ``metrics/...``) left in a test's config would
    otherwise land in the checkout, and in the worst case overwrite the committed metrics."""
    before = _untracked_in_repo()
    yield
    after = _untracked_in_repo()
    if before is not None and after is not None and after - before:
        pytest.fail(f"the tests wrote into the repository: {sorted(after - before)}")


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sample data not found at {REALDATA}")
    return REALDATA


@pytest.fixture
def spec() -> DatasetSpec:
    return DEMO_SPEC


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset (coco_folders layout) shared read-only by the session."""
    root = tmp_path_factory.mktemp("demo") / "demo"
    write_demo(str(root), seed=3, width=64, height=48, splits={"train": 10, "val": 4})
    return root


# detector training that learns the 96 x 64 demo frames (ingest_demo) within seconds: real-data AP@0.5 > 0.2
LEARNING_DETECTOR_TRAIN: dict[str, Any] = {
    "steps": 150,
    "batch_size": 8,
    "lr": 0.003,
    "warmup_steps": 10,
    "ema_decay": None,
    "log_every": 10,
    "checkpoint_every": 50,
}


def ingest_demo(tmp: Path, splits: dict[str, int], rows_per_shard: int) -> Path:
    """96 x 64 demo frames (seed 11) of ``splits``, ingested to ``tmp``/canonical: the evaluation's real set."""
    from diffx.stages import ingest

    write_demo(str(tmp / "raw"), seed=11, width=96, height=64, splits=splits)
    config = make_config(
        tmp / "raw",
        tmp / "canonical",
        **{
            "ingest.source.annotations": {s: f"annotations/{s}.json" for s in splits},
            "shards.rows_per_shard": rows_per_shard,
        },
    )
    ingest.run(config, progress=False)
    return tmp / "canonical"


def make_config(root: Path | str, output: Path | str, **overrides: Any) -> DiffxConfig:
    raw: dict[str, Any] = {
        "data": {
            "modalities": [m.model_dump() for m in DEMO_SPEC.modalities],
            "classes": list(DEMO_SPEC.classes),
        },
        "shards": {"rows_per_shard": 4, "png_compress_level": 1},
        "ingest": {
            "source": {
                "format": "coco_folders",
                "root": str(root),
                "modalities": {"rgb": "rgb", "thermal": "thermal", "depth": "depth"},
                "annotations": {"train": "annotations/train.json", "val": "annotations/val.json"},
            },
            "output": str(output),
            "report": str(Path(output).parent / "ingest-report.json"),
            "metrics": str(Path(output).parent / "ingest-metrics.json"),
        },
    }
    for dotted, value in overrides.items():
        node = raw
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return parse_config(raw, "test-params")


def gate_config(tmp: Path, data: Path, **overrides: Any) -> DiffxConfig:
    """make_config with gate reports, metrics and the review queue under ``tmp`` (and no data docs)."""
    return make_config(
        tmp / "raw",
        data,
        **{
            "quality.reports": str(tmp / "reports"),
            "quality.metrics": str(tmp / "gate-metrics"),
            "quality.docs": None,
            "refine.queue": str(tmp / "queue.jsonl"),
            **overrides,
        },
    )


def make_sample(
    sample_id: str,
    split: str = "train",
    width: int = 40,
    height: int = 32,
    seed: int = 0,
    boxes: list[tuple[str, list[float]]] | None = None,
) -> Sample:
    rng = np.random.default_rng(seed)
    images = {
        "rgb": encode_png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), f"{sample_id}-rgb", 1),
        "thermal": encode_png(rng.integers(0, 256, (height, width), dtype=np.uint8), f"{sample_id}-t", 1),
        "depth": encode_png(rng.integers(0, 65536, (height, width), dtype=np.uint16), f"{sample_id}-d", 1),
    }
    boxes = boxes if boxes is not None else [("car", [1, 2, 10, 12]), ("person", [20, 5, 25, 30])]
    return Sample(sample_id, split, width, height, images, [make_object(b, c, DEMO_SPEC) for c, b in boxes])


KAIST_SIZE = (64, 48)


def write_kaist(root: Path) -> Path:
    """A KAIST folder as released: two videos whose frames share names (I00000, I00001), JPEG pairs whose LWIR
    is three nearly equal channels, bbGt annotations (a box past the edge, an ignored unsure one), image sets."""
    import numpy as np
    from PIL import Image

    width, height = KAIST_SIZE
    rng = np.random.default_rng(7)
    for video in ("V000", "V001"):
        for frame in ("I00000", "I00001"):
            folder = root / "images" / "set00" / video
            lwir = np.repeat(rng.integers(0, 200, (height, width, 1), dtype=np.uint8), 3, axis=2)
            lwir[:16, :16, 1] += 8  # KAIST LWIR channels differ by a few grey levels here and there
            for name, array in (("visible", rng.integers(0, 255, (height, width, 3), dtype=np.uint8)), ("lwir", lwir)):
                (folder / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / name / f"{frame}.jpg", quality=90)
            lines = ["% bbGt version=3"]
            if frame == "I00000":
                lines += [
                    "person 10 5 12 30 0 0 0 0 0 0 0",
                    "cyclist 50 10 20 30 0 0 0 0 0 0 0",  # runs past the 64 px edge: clipped to 50..64
                    "person? 1 1 4 4 0 0 0 0 0 1 0",  # unsure and marked ignore
                ]
            (root / "annotations" / "set00" / video).mkdir(parents=True, exist_ok=True)
            (root / "annotations" / "set00" / video / f"{frame}.txt").write_text("\n".join(lines) + "\n")
    (root / "imageSets").mkdir(parents=True, exist_ok=True)
    (root / "imageSets" / "train.txt").write_text("set00/V000/I00000\nset00/V000/I00001\nset00/V001/I00000\n")
    (root / "imageSets" / "test.txt").write_text("set00/V001/I00001\n")
    return root


@pytest.fixture
def kaist_root(tmp_path: Path) -> Path:
    return write_kaist(tmp_path / "kaist")


def read_validated(source: Any, spec: Any, channels: dict[str, Any] | None = None) -> tuple[list[Any], list[Any]]:
    """Every sample a reader yields, through the ingest validator: (valid samples, rejected ones)."""
    from diffx.data.readers import ReadContext, read_source
    from diffx.data.sample import validated

    rejected: list[Any] = []
    samples = list(validated(read_source(source, ReadContext(spec, 1, channels or {})), spec, rejected))
    return samples, rejected

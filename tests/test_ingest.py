"""Stage ingest: quarantine instead of silent drops, failure thresholds, atomic completion, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diffx.errors import DataError
from diffx.shards.manifest import read_manifest
from diffx.shards.validate import validate_shard_set
from diffx.stages import ingest

from .conftest import make_config


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    shutil.copytree(demo_root, root)
    return root


def test_ingest_demo_produces_valid_shards(demo_copy: Path, tmp_path: Path) -> None:
    config = make_config(demo_copy, tmp_path / "canonical")
    result = ingest.run(config, progress=False)
    assert result.rows == {"train": 10, "val": 4} and result.shards == 4  # 4+4+2 train, 4 val
    assert validate_shard_set(str(tmp_path / "canonical")).ok
    report = json.loads((tmp_path / "ingest-report.json").read_text())
    assert report["rows"] == 14 and report["quarantined"] == 0


def test_ingest_is_deterministic(demo_copy: Path, tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        ingest.run(make_config(demo_copy, tmp_path / name), progress=False)
        digests.append([(s.path, s.sha256) for s in read_manifest(str(tmp_path / name)).shards])
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "_manifest.json").read_bytes() == (tmp_path / "b" / "_manifest.json").read_bytes()


def test_bad_sample_is_quarantined_and_reported(demo_copy: Path, tmp_path: Path) -> None:
    victim = demo_copy / "thermal" / "demo-train-00002.png"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated image
    config = make_config(demo_copy, tmp_path / "canonical", **{"ingest.max_quarantine_fraction": 0.2})
    result = ingest.run(config, progress=False)
    assert result.rows["train"] == 9
    report = json.loads((tmp_path / "ingest-report.json").read_text())
    assert report["quarantined"] == 1
    entry = report["quarantine"][0]
    assert entry["id"] == "demo-train-00002" and "demo-train-00002.png: cannot decode image" in entry["reason"]


def test_too_many_rejects_fail_and_keep_the_previous_good_set(demo_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "canonical"
    ingest.run(make_config(demo_copy, out), progress=False)  # a previous good run
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    for path in list((demo_copy / "depth").glob("demo-train-0000[0-4].png")):
        path.unlink()
    with pytest.raises(
        DataError,
        match=r"5 of 14 samples quarantined .* above ingest\.max_quarantine_fraction.*"
        r"5x file not found \(e\.g\. sample demo-train-00000",
    ):
        ingest.run(make_config(demo_copy, out), progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # the failed run wrote into a staging folder, never into the good set
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]  # and removed it
    report = json.loads((tmp_path / "ingest-report.json").read_text())
    assert report["quarantined"] == 5  # the report still says which and why


def test_on_invalid_raise(demo_copy: Path, tmp_path: Path) -> None:
    (demo_copy / "rgb" / "demo-val-00001.png").unlink()
    config = make_config(demo_copy, tmp_path / "c", **{"ingest.on_invalid": "raise"})
    with pytest.raises(DataError, match=r"demo-val-00001: .*rgb/demo-val-00001\.png: file not found"):
        ingest.run(config, progress=False)

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from diffx.cli import app

from .conftest import REPO, make_config

runner = CliRunner()


def _params_file(tmp_path: Path, demo_root: Path) -> Path:
    config = make_config(demo_root, tmp_path / "canonical")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def test_ingest_validate_inspect_export(tmp_path: Path, demo_root: Path) -> None:
    params = _params_file(tmp_path, demo_root)
    result = runner.invoke(app, ["ingest", "--params", str(params), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["rows"] == 14
    root = str(tmp_path / "canonical")
    result = runner.invoke(app, ["shards", "validate", root])
    assert result.exit_code == 0 and "ok: 4 shards, 14 rows" in result.stdout
    inspected = json.loads(runner.invoke(app, ["shards", "inspect", root]).stdout)
    assert inspected["splits"]["train"] == {"rows": 10, "shards": 3}
    result = runner.invoke(app, ["shards", "export", root, str(tmp_path / "yolo"), "--format", "yolo"])
    assert result.exit_code == 0 and json.loads(result.stdout)["images"] == {"train": 10, "val": 4}


def test_validate_fails_on_planted_truncation(tmp_path: Path, demo_root: Path) -> None:
    params = _params_file(tmp_path, demo_root)
    assert runner.invoke(app, ["ingest", "--params", str(params), "--no-progress"]).exit_code == 0
    shard = tmp_path / "canonical" / "train" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    result = runner.invoke(app, ["shards", "validate", str(tmp_path / "canonical")])
    assert result.exit_code == 1
    assert "train/part-00000.parquet" in result.stderr and "truncated" in result.stderr


def test_bad_params_exit_2_and_name_the_key(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ingest"]["on_invalid"] = "ignore"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["ingest", "--params", str(params)])
    assert result.exit_code == 2 and "ingest.on_invalid" in result.stderr


def test_demo_command_writes_coco_folders(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["demo"].update({"width": 48, "height": 32, "splits": {"train": 2}})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["demo", "--params", str(params), "--output", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "d" / "depth").iterdir()) == [
        "demo-train-00000.png",
        "demo-train-00001.png",
    ]

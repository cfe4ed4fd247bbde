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


def test_params_check_validates_files_overlays_and_overrides_without_running(tmp_path: Path) -> None:
    params = REPO / "params.yaml"
    ok = runner.invoke(app, ["params", "check", str(params)])
    assert ok.exit_code == 0 and "ok:" in ok.stdout
    overlay = tmp_path / "preset.yaml"
    overlay.write_text("vae:\n  train:\n    lr: -1\n")
    bad = runner.invoke(app, ["params", "check", str(params), "--overlay", str(overlay)])
    assert bad.exit_code == 2 and "vae.train.lr" in bad.output and "preset.yaml" in bad.output
    bad = runner.invoke(app, ["params", "check", str(params), "--set", "plan.num_samples=-5"])
    assert bad.exit_code == 2 and "plan.num_samples" in bad.output
    bad = runner.invoke(app, ["params", "check", str(params), "--set", "conditioning.text_encoder=clip:/nowhere"])
    assert bad.exit_code == 2 and "clip:/nowhere" in bad.output  # cross-section facts are checked too


def test_stage_flags_go_through_the_same_validation(tmp_path: Path) -> None:
    """`--steps 0` or `--set plan.num_samples=-5` used to be written into the loaded config after validation."""
    for args, key in (
        (["train-vae", "--steps", "0"], "vae.train.steps"),
        (["train-unet", "--steps", "-1"], "unet.train.steps"),
        (["plan", "--set", "plan.num_samples=-5"], "plan.num_samples"),
        (["generate", "--set", "generate.batch_size=0"], "generate.batch_size"),
        (["evaluate", "--set", "evaluate.detector_train.stesp=3"], "evaluate.detector_train.stesp: unknown key"),
    ):
        result = runner.invoke(app, [*args, "--params", str(REPO / "params.yaml")])
        assert result.exit_code == 2 and key in result.output, (args, result.output)
    assert not (tmp_path / "data").exists()


def test_params_render_spells_out_every_key(tmp_path: Path) -> None:
    partial = tmp_path / "mine.yaml"
    partial.write_text("plan:\n  num_samples: 7\n")
    out = tmp_path / "full.yaml"
    assert runner.invoke(app, ["params", "render", str(partial), "--out", str(out)]).exit_code == 0
    full = yaml.safe_load(out.read_text())
    assert full["plan"]["num_samples"] == 7 and full["vae"]["train"]["steps"] == 1000
    assert "# caption tokens the UNet sees" in out.read_text()  # the field's description, as a comment

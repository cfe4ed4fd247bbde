"""Hostile inputs through the real CLI entry point (``diffx.cli.main``), as a user would meet them.

For every case: the exit code says "bad input" (2), the message names the file, row or key, no traceback is
printed, and nothing that existed before the failed command changed (reports of the failed attempt aside):
the previous good outputs stay complete and readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from diffx.cli import main
from diffx.data.demo import write_demo
from diffx.shards.reader import ShardSet
from diffx.shards.validate import validate_shard_set

from .conftest import make_config
from .tiny_models import TINY_UNET_MODEL, save_tiny_vae

INGEST = ["ingest", "--params", "params.yaml", "--no-progress"]
CAPTION = ["caption", "--params", "params.yaml", "--no-progress"]
REFINE = ["refine", "--params", "params.yaml"]
TRAIN_UNET = ["train-unet", "--params", "params.yaml", "--no-progress"]
PLAN = ["plan", "--params", "params.yaml"]
GENERATE = ["generate", "--params", "params.yaml", "--no-progress"]


def _params() -> dict:
    raw = make_config("raw", "data/canonical").model_dump(mode="json")
    raw["ingest"].update({"report": "reports/ingest.json", "metrics": "metrics/ingest.json"})
    raw["quality"].update({"docs": None})
    raw["unet"].update(
        {
            "model": {**TINY_UNET_MODEL, "fuser_gate_init": 0.0},
            "train": {
                **raw["unet"]["train"],
                "steps": 1,
                "batch_size": 4,
                "ema_decay": None,
                "device": "cpu",
                "min_snr_gamma": None,
                "cache_conditioning": False,
            },
            "preview": {**raw["unet"]["preview"], "steps": 1},
            "preview_samples": 1,
        }
    )
    raw["plan"].update({"num_samples": 4, "rows_per_shard": 2})
    raw["generate"].update(
        {"batch_size": 2, "device": "cpu", "sampler": {"sampler": "ddim", "steps": 1, "guidance": 1.0}}
    )
    return raw


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory where ingest, caption, refine, train_unet (1 step) and plan all succeeded."""
    root = tmp_path_factory.mktemp("good")
    write_demo(str(root / "raw"), seed=3, width=48, height=32, splits={"train": 12, "val": 4})
    (root / "params.yaml").write_text(yaml.safe_dump(_params()))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for argv in (INGEST, CAPTION, REFINE):
            assert main(argv) == 0, argv
        save_tiny_vae("models/vae")
        assert main(TRAIN_UNET) == 0
        assert main(PLAN) == 0
    finally:
        os.chdir(cwd)
    return root


@dataclass
class Case:
    argv: list[str]
    plant: Callable[[Path], None]
    says: str  # a fragment the error message must contain (the file, field or problem)
    code: int = 2  # 2: bad input; 1: a quality gate's verdict (the data failed, the command did not)


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_ann(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda d: _edit_json(d / "raw/annotations/train.json", lambda c: change(c["annotations"][0]))


def _edit_params(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        raw = yaml.safe_load((d / "params.yaml").read_text())
        change(raw)
        (d / "params.yaml").write_text(yaml.safe_dump(raw))

    return plant


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)

    return plant


def _truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: int(len(data) * keep)])

    return plant


def _flip(rel: str) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        data = bytearray((d / rel).read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
        (d / rel).write_bytes(bytes(data))

    return plant


def _remove(rel: str) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        target = d / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return plant


def _symlink_loop(rel: str) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        target = d / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        other = target.with_name(target.name + "-loop")
        os.symlink(other.name, target)
        os.symlink(target.name, other)

    return plant


def _objects_as_text(d: Path) -> None:
    """Rewrite a canonical shard with its ``objects`` column as strings, and re-manifest it (sha and size
    agree): only the schema check can tell."""
    shard = d / "data/canonical/train/part-00000.parquet"
    table = pq.read_table(shard)
    index = table.schema.get_field_index("objects")
    table = table.set_column(index, "objects", pa.array([json.dumps(v) for v in table.column("objects").to_pylist()]))
    pq.write_table(table, shard)
    data = shard.read_bytes()

    def fix(manifest: dict) -> None:
        entry = next(s for s in manifest["shards"] if s["path"] == "train/part-00000.parquet")
        entry.update({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    _edit_json(d / "data/canonical/_manifest.json", fix)


def _plan_rows(change: Callable[[list[dict]], None]) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        table = pq.read_table(d / "data/plan.parquet")
        rows = table.to_pylist()
        change(rows)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), d / "data/plan.parquet")

    return plant


def _box_outside(rows: list[dict]) -> None:
    row = next(r for r in rows if r["objects"])
    row["objects"][0]["bbox"] = [row["width"] - 4.0, 2.0, row["width"] + 30.0, 12.0]


def _unknown_class(rows: list[dict]) -> None:
    row = next(r for r in rows if r["objects"])
    row["objects"][0]["category"] = "truck"


def _foreign_source(rows: list[dict]) -> None:
    rows[0]["source_id"] = "never-ingested-0001"


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels over a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _one_bit(rel: str) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        from PIL import Image

        Image.open(d / rel).convert("1").save(d / rel)

    return plant


def _unreadable_all(folder: str) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        for path in (d / folder).iterdir():
            path.write_bytes(b"not an image")

    return plant


def _foreign_folder(rel: str) -> Callable[[Path], None]:
    def plant(d: Path) -> None:
        (d / rel).mkdir(parents=True)
        (d / rel / "notes.txt").write_text("somebody's work\n")

    return plant


def _live_lease(d: Path) -> None:
    import time

    lock = d / "data/synthetic/train/.part-00000.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"owner": "x", "host": "pod-alive", "pid": 1, "expires": time.time() + 600}))


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- params and the command line
    "params file missing": Case(["ingest", "--params", "nope.yaml"], lambda d: None, "nope.yaml"),
    "params not YAML": Case(INGEST, _write("params.yaml", b"data: [unclosed\n  - x: {"), "params.yaml"),
    "params is a list": Case(INGEST, _write("params.yaml", b"- 1\n- 2\n"), "params.yaml"),
    "unknown params key": Case(INGEST, _edit_params(lambda r: r["ingest"].update(typo_key=1)), "ingest.typo_key"),
    "wrong params type": Case([*INGEST, "--set", "shards.rows_per_shard=abc"], lambda d: None, "rows_per_shard"),
    "--set without =": Case([*INGEST, "--set", "shards.rows_per_shard"], lambda d: None, "KEY=VALUE"),
    "--set unknown key": Case([*INGEST, "--set", "shards.nope=1"], lambda d: None, "shards.nope"),
    # ---------------------------------------------------------------- the raw source
    "source root typo": Case([*INGEST, "--set", "ingest.source.root=raw-typo"], lambda d: None, "raw-typo"),
    "source root is a symlink loop": Case(INGEST, _symlink_loop("raw"), "raw"),
    "annotation file missing": Case(INGEST, _remove("raw/annotations/train.json"), "train.json"),
    "annotation not JSON": Case(INGEST, _write("raw/annotations/train.json", b"{oops"), "not valid JSON"),
    "annotation is a JSON list": Case(INGEST, _write("raw/annotations/train.json", b"[1, 2]"), "got a JSON list"),
    "annotation not UTF-8": Case(INGEST, _write("raw/annotations/train.json", b'\xff\xfe{"a": 1}'), "UTF-8"),
    "categories not a list": Case(
        INGEST,
        lambda d: _edit_json(d / "raw/annotations/train.json", lambda c: c.update(categories={})),
        "categories",
    ),
    "bbox with non-numbers": Case(INGEST, _first_ann(lambda a: a.update(bbox=["a", 1, 2, 3])), "annotations[0]"),
    "bbox of three values": Case(INGEST, _first_ann(lambda a: a.update(bbox=[1, 2, 3])), "annotations[0]"),
    "bbox with a null": Case(INGEST, _first_ann(lambda a: a.update(bbox=[None, 1, 2, 3])), "annotations[0]"),
    "annotation of an unknown image": Case(INGEST, _first_ann(lambda a: a.update(image_id=987654)), "image_id"),
    "annotation of an unknown category": Case(INGEST, _first_ann(lambda a: a.update(category_id=99)), "category_id"),
    "image entry without file_name": Case(
        INGEST,
        lambda d: _edit_json(d / "raw/annotations/train.json", lambda c: c["images"][0].pop("file_name")),
        "images[0]",
    ),
    "class not in the class list": Case(
        INGEST,
        lambda d: _edit_json(
            d / "raw/annotations/train.json",
            lambda c: [cat.update(name="truck") for cat in c["categories"] if cat["name"] == "car"],
        ),
        "unknown class 'truck'",
    ),
    "a modality folder that is not there": Case(
        [*INGEST, "--set", "ingest.source.modalities.thermal=thermal-typo"], lambda d: None, "file not found"
    ),
    "declared bit depth does not match the files": Case(
        INGEST,
        _edit_params(lambda r: r["data"]["modalities"][1].update(bit_depth=16)),
        "expected 16-bit grey, got 8-bit",
    ),
    "an image file that is a symlink loop": Case(INGEST, _symlink_loop("raw/rgb/demo-train-00000.png"), "symbolic"),
    "a truncated image": Case(INGEST, _truncate("raw/thermal/demo-train-00001.png", 0.3), "demo-train-00001"),
    "an image that is not an image": Case(INGEST, _write("raw/depth/demo-train-00002.png", b"hello"), "cannot decode"),
    "one bad sample with on_invalid raise": Case(
        [*INGEST, "--set", "ingest.on_invalid=raise"], _write("raw/depth/demo-train-00002.png", b"x"), "on_invalid"
    ),
    # ---------------------------------------------------------------- shard sets read by later stages
    "canonical shard altered, same size": Case(CAPTION, _flip("data/canonical/train/part-00000.parquet"), "sha256"),
    "canonical shard truncated": Case(
        CAPTION, _truncate("data/canonical/train/part-00001.parquet", 0.9), "part-00001.parquet"
    ),
    "canonical shard missing": Case(CAPTION, _remove("data/canonical/val/part-00000.parquet"), "missing"),
    "manifest missing": Case(CAPTION, _remove("data/canonical/_manifest.json"), "no manifest"),
    "manifest not JSON": Case(CAPTION, _write("data/canonical/_manifest.json", b"{"), "_manifest.json"),
    "manifest is a JSON list": Case(CAPTION, _write("data/canonical/_manifest.json", b"[]"), "_manifest.json"),
    "manifest shard entry garbled": Case(
        CAPTION,
        lambda d: _edit_json(d / "data/canonical/_manifest.json", lambda m: m["shards"][0].pop("sha256")),
        "shards[0]",
    ),
    "objects column of the wrong type": Case(CAPTION, _objects_as_text, "schema differs"),
    "captioned shard altered": Case(PLAN, _flip("data/captioned/train/part-00000.parquet"), "sha256"),
    # ---------------------------------------------------------------- caption tables and review decisions
    "captions table truncated": Case(REFINE, _truncate("data/captions.parquet"), "captions.parquet"),
    "decisions not UTF-8": Case(REFINE, _write("reviews/decisions.jsonl", b'{"id": "\xff"}\n'), "decisions.jsonl:1"),
    "decisions line not JSON": Case(REFINE, _write("reviews/decisions.jsonl", b"{nope\n"), "decisions.jsonl:1"),
    "decision for an unknown sample": Case(
        REFINE, _write("reviews/decisions.jsonl", b'{"id": "ghost", "action": "accept"}\n'), "ghost"
    ),
    "decision with an unknown action": Case(
        REFINE, _write("reviews/decisions.jsonl", b'{"id": "demo-train-00000", "action": "maybe"}\n'), "action"
    ),
    # ---------------------------------------------------------------- models
    "VAE weights truncated": Case(
        TRAIN_UNET, _truncate("models/vae/diffusion_pytorch_model.safetensors"), "models/vae"
    ),
    "VAE weights missing": Case(
        TRAIN_UNET, _remove("models/vae/diffusion_pytorch_model.safetensors"), "weights are missing"
    ),
    "VAE config garbage": Case(TRAIN_UNET, _write("models/vae/config.json", b"{"), "models/vae"),
    "UNet folder missing": Case(GENERATE, _remove("models/unet"), "models/unet"),
    "UNet weights truncated": Case(GENERATE, _truncate("models/unet/diffusion_pytorch_model.safetensors"), "unet"),
    "UNet's VAE copy truncated": Case(
        GENERATE, _truncate("models/unet/vae/diffusion_pytorch_model.safetensors"), "vae"
    ),
    "model card garbage": Case(GENERATE, _write("models/unet/diffx.json", b"{]"), "diffx.json"),
    # ---------------------------------------------------------------- plans
    "plan missing": Case(GENERATE, _remove("data/plan.parquet"), "plan.parquet"),
    "plan truncated": Case(GENERATE, _truncate("data/plan.parquet"), "plan.parquet"),
    "plan that is text": Case(GENERATE, _write("data/plan.parquet", b"id,width\n1,2\n"), "plan.parquet"),
    "plan box outside the frame": Case(GENERATE, _plan_rows(_box_outside), "outside the"),
    "plan row of an unknown class": Case(GENERATE, _plan_rows(_unknown_class), "truck"),
    "plan row from data not in the source": Case(GENERATE, _plan_rows(_foreign_source), "never-ingested-0001"),
    # ---------------------------------------------------------------- gates and storage
    "gate on tampered data": Case(
        ["check", "ingest", "--params", "params.yaml"],
        _flip("data/canonical/train/part-00000.parquet"),
        "sha256_ok",
        code=1,
    ),
    "unknown gate": Case(["check", "nope", "--params", "params.yaml"], lambda d: None, "unknown gate"),
    # ---------------------------------------------------------------- outputs that would destroy inputs (#39)
    "export onto the set it exports": Case(
        ["shards", "export", "data/canonical", "data/canonical", "-f", "coco", "--overwrite"],
        lambda d: None,
        "OUT (data/canonical) is the same path as ROOT (data/canonical)",
    ),
    "export into the folder that holds its set": Case(
        ["shards", "export", "data/canonical", "data", "-f", "yolo", "--overwrite"],
        lambda d: None,
        "OUT (data) contains ROOT (data/canonical)",
    ),
    "export inside the set it exports": Case(
        ["shards", "export", "data/canonical", "data/canonical/coco", "--overwrite"], lambda d: None, "lies inside"
    ),
    "ingest output is the raw source": Case(
        [*INGEST, "--set", "ingest.output=raw"], lambda d: None, "ingest.output (raw) is the same path as"
    ),
    "ingest output inside the raw source": Case(
        [*INGEST, "--set", "ingest.output=raw/canonical"], lambda d: None, "lies inside ingest.source.root"
    ),
    "ingest output is another stage's output file": Case(
        [*INGEST, "--set", "ingest.output=data/captions.parquet"],
        lambda d: None,
        "ingest.output (data/captions.parquet): it is a file, where a folder goes",
    ),
    "ingest output is somebody else's folder": Case(
        [*INGEST, "--set", "ingest.output=mine"], _foreign_folder("mine"), "it holds notes.txt"
    ),
    "training checkpoints in its data": Case(
        [*TRAIN_UNET, "--set", "unet.checkpoints=data/captioned/ckpt"], lambda d: None, "unet.checkpoints"
    ),
    "a report path that is another stage's output": Case(
        [*PLAN, "--set", "plan.report=data/captions.parquet"],
        lambda d: None,
        "caption.output (data/captions.parquet) is the same path as plan.report",
    ),
    # ---------------------------------------------------------------- settings that passed silently (#39)
    "an integer given as yes": Case(
        INGEST, _edit_params(lambda r: r["ingest"].update(workers=True)), "ingest.workers: expected a number"
    ),
    "an integer given as yes names the line": Case(
        INGEST, _edit_params(lambda r: r["ingest"].update(workers=True)), "(params.yaml:"
    ),
    "a boolean given as 1": Case(
        [*INGEST, "--set", "conditioning.mask_caption_padding=1"], lambda d: None, "expected true or false"
    ),
    "source root is a file": Case(
        [*INGEST, "--set", "ingest.source.root=params.yaml"],
        lambda d: None,
        "params.yaml: ingest.source.root: is a file",
    ),
    "a decompression bomb": Case(INGEST, _write("raw/thermal/demo-train-00003.png", _bomb_png()), "max_image_pixels"),
    "a 1-bit image for an 8-bit modality": Case(INGEST, _one_bit("raw/thermal/demo-train-00004.png"), "1-bit"),
    # ---------------------------------------------------------------- exits that say what happened (#39)
    "generate from an empty plan": Case(GENERATE, _plan_rows(lambda rows: rows.clear()), "the plan has no rows"),
    "dry run of an ingest that would fail": Case(
        [*INGEST, "--dry-run"], _unreadable_all("raw/depth"), "ingest would fail"
    ),
    "object store without credentials": Case(
        [*INGEST, "--set", "ingest.output=s3://diffx-test-no-credentials/canonical"], lambda d: None, "credentials"
    ),
}


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and not rel.startswith(("reports/", "metrics/")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_error_and_loses_nothing(
    name: str, good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    work = tmp_path / "work"
    shutil.copytree(good, work, symlinks=True)
    case.plant(work)
    before = _snapshot(work)
    monkeypatch.chdir(work)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    code = main(case.argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == case.code, f"{name}: exit {code}\n{text}"
    assert "Traceback" not in text and "unexpected" not in text, text
    assert case.says in text, f"{name}: {case.says!r} not in:\n{text}"
    assert _snapshot(work) == before, f"{name}: files written before the failure changed"
    if name.startswith(("source", "annotation", "bbox", "class", "a ", "an ", "declared", "one bad", "image")):
        assert validate_shard_set(str(work / "data/canonical")).ok  # the previous good set is still complete
        assert len(ShardSet(str(work / "data/canonical"))) == 16


def test_the_suite_is_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_unexpected_errors_print_one_line_and_a_debug_hint(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure diffx does not know yet: one line and the hint, and --debug shows the traceback."""
    import diffx.stages.plan

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(diffx.stages.plan, "run", broken)
    monkeypatch.chdir(good)
    assert main(PLAN) == 1
    err = capsys.readouterr().err
    assert "unexpected ZeroDivisionError: planted" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main([*PLAN, "--debug"])


# ------------------------------------------------------------------------------------ #39: runs that must finish
def _work(good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    shutil.copytree(good, work, symlinks=True)
    monkeypatch.chdir(work)
    return work


def test_generate_that_leaves_a_shard_to_a_live_lease_exits_3(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The set is not complete, so neither a scheduler nor dvc repro may read the run as done."""
    work = _work(good, tmp_path, monkeypatch)
    _live_lease(work)
    assert main(GENERATE) == 3
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["complete"] is False
    assert "leased by another live worker" in out.err and "Traceback" not in out.err
    assert not (work / "data/synthetic/_manifest.json").exists()


def test_an_unreadable_caption_cache_is_set_aside_and_rebuilt(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    work = _work(good, tmp_path, monkeypatch)
    cache = work / "cache" / "captions.sqlite"
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(b"this is not a database, just bytes")
    before = (work / "data/captions.parquet").read_bytes()
    assert main(CAPTION) == 0
    aside = list(cache.parent.glob("captions.sqlite.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"this is not a database, just bytes"  # kept, not deleted
    assert "cannot be read" in caplog.text
    assert (work / "data/captions.parquet").read_bytes() == before  # the same captions, recomputed
    assert main(CAPTION) == 0  # and the rebuilt cache serves the next run
    assert json.loads((work / "reports/caption.json").read_text())["cached"] == 16


def _mount(kind: str, target: Path, *options: str) -> bool:
    import subprocess

    target.mkdir(parents=True, exist_ok=True)
    args = ["mount", *options, target.as_posix()] if kind == "bind" else ["mount", "-t", "tmpfs", *options, "tmpfs"]
    if kind != "bind":
        args.append(target.as_posix())
    try:
        return subprocess.run(args, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _umount(target: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", target.as_posix()], capture_output=True, timeout=10)


def test_ingest_into_a_mount_point_swaps_its_contents(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container volume (-v /data/out) cannot be renamed away: the set is staged inside it instead."""
    work = _work(good, tmp_path, monkeypatch)
    target = work / "volume"
    if not _mount("tmpfs", target):
        pytest.skip("cannot mount a tmpfs here (needs root or a user namespace)")
    try:
        for _ in range(2):  # the second run replaces a complete set that lives in the mount
            assert main([*INGEST, "--set", "ingest.output=volume"]) == 0
            assert validate_shard_set(str(target)).ok and len(ShardSet(str(target))) == 16
            assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == []  # no staging left
    finally:
        _umount(target)


def test_a_read_only_output_is_named_as_such(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _work(good, tmp_path, monkeypatch)
    target = work / "readonly"
    if not _mount("tmpfs", target, "-o", "ro"):
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        before = _snapshot(work / "data")
        assert main([*INGEST, "--set", "ingest.output=readonly/canonical"]) == 2
        err = capsys.readouterr().err
        assert "read-only" in err and "readonly" in err and "unexpected" not in err
        assert _snapshot(work / "data") == before
    finally:
        _umount(target)

"""Planning and generation: targets, determinism, provenance, SIGKILL + resume, concurrent workers, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from diffx.config import DiffxConfig, parse_config, with_overrides
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.errors import DataError
from diffx.sample.planner import read_plan
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.shards.validate import validate_shard_set
from diffx.shards.writer import ShardSetWriter
from diffx.stages import generate, plan, train_unet

from .conftest import DEMO_SPEC, make_sample
from .tiny_models import TINY_UNET_MODEL, open_layout_paths, save_tiny_vae


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Captioned shards, a tiny MP-VAE and a 1-step DiffX-UNet saved by the real train_unet stage."""
    root = tmp_path_factory.mktemp("generate")
    writer = ShardSetWriter(str(root / "captioned"), DEMO_SPEC)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(10):
        boxes = [("car", [1, 2, 9, 8]), ("person", [10, 3, 14, 15])] + (
            [("bicycle", [2, 9, 8, 15])] if i % 3 == 0 else []
        )
        sample = make_sample(f"t{i}", "train", width=16, height=16, seed=int(rng.integers(1000)), boxes=boxes)
        samples.append(
            dataclasses.replace(
                sample, caption=f"An image of a street scene at night, number {i}.", caption_source="template"
            )
        )
    writer.finalize(
        writer.write_split("train", samples[:8], 4)
        + writer.write_split("val", [dataclasses.replace(s, split="val") for s in samples[8:]], 4)
    )
    save_tiny_vae(root / "vae")
    train_unet.run(parse_config(_params(root, root / "run")), progress=False)
    return root


def _params(world: Path, work: Path, spec: DatasetSpec = DEMO_SPEC, **plan: Any) -> dict[str, Any]:
    return {
        "data": {"modalities": [m.model_dump() for m in spec.modalities], "classes": list(spec.classes)},
        "ingest": {
            "source": {
                "format": "coco_folders",
                "root": str(work),
                "modalities": {"rgb": "rgb"},
                "annotations": {"train": "a.json"},
            }
        },
        "conditioning": {"max_tokens": 16, "max_objects": 4},
        "unet": {
            "data": str(world / "captioned"),
            "vae": str(world / "vae"),
            "model": TINY_UNET_MODEL,
            "train": {"steps": 1, "batch_size": 4, "ema_decay": None, "device": "cpu"},
            "preview": {"steps": 1},
            "preview_samples": 1,
            "output": str(world / "unet"),
            "checkpoints": str(work / "ckpt"),
            "metrics": str(work / "unet.json"),
            "report": str(work / "unet-run.json"),
            "plots": str(work / "u.csv"),
            "grid": str(work / "preview.png"),
        },
        "plan": {
            "source": str(world / "captioned"),
            "num_samples": 12,
            "rows_per_shard": 2,
            "output": str(work / "plan.parquet"),
            "report": str(work / "plan.json"),
            **plan,
        },
        "generate": {
            "plan": str(work / "plan.parquet"),
            "unet": str(world / "unet"),
            "batch_size": 2,
            "device": "cpu",
            "sampler": {"sampler": "ddim", "steps": 3, "guidance": 2.0},
            "output": str(work / "synthetic"),
            "report": str(work / "generate.json"),
        },
    }


def _config(world: Path, work: Path, **plan: Any) -> DiffxConfig:
    return parse_config(_params(world, work, **plan))


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "train").glob("part-*.parquet"))}


def test_plan_meets_class_targets_and_is_deterministic(world: Path, tmp_path: Path) -> None:
    report = plan.run(_config(world, tmp_path, num_samples=40, class_targets={"bicycle": 2.0}))
    assert report["per_sample_planned"]["bicycle"] >= 1.8 * report["per_sample_real"]["bicycle"]
    first = (tmp_path / "plan.parquet").read_bytes()
    plan.run(_config(world, tmp_path, num_samples=40, class_targets={"bicycle": 2.0}))
    assert (tmp_path / "plan.parquet").read_bytes() == first
    rows, spec, per_shard = read_plan(str(tmp_path / "plan.parquet"))
    assert len(rows) == 40 and per_shard == 2 and spec == DEMO_SPEC and len({r["seed"] for r in rows}) == 40
    for row in rows:
        for obj in row["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= row["width"] and 0 <= y0 < y1 <= row["height"]
        if row["edited"]:
            assert row["caption"].startswith("An image of a street scene at night")  # re-templated, time kept
    with pytest.raises(DataError, match=r"names classes \[.zebra.\] that the data does not have"):
        plan.run(_config(world, tmp_path, class_targets={"zebra": 2.0}))


def test_user_layouts_from_jsonl(world: Path, tmp_path: Path) -> None:
    layouts = tmp_path / "layouts.jsonl"
    layouts.write_text(
        json.dumps(
            {
                "width": 16,
                "height": 16,
                "caption": "An image of one car.",
                "objects": [{"bbox": [2, 2, 10, 10], "category": "car"}],
            }
        )
        + "\n"
    )
    plan.run(_config(world, tmp_path, layouts=str(layouts), num_samples=3, flip=0, jitter=0, box_dropout=0))
    rows, _, _ = read_plan(str(tmp_path / "plan.parquet"))
    assert [r["caption"] for r in rows] == ["An image of one car."] * 3 and rows[0]["caption_source"] == "human"
    layouts.write_text(
        '{"width": 16, "height": 16, "objects": [{"bbox": [1, 1, 5, 5], "category": "car"}]}\n{"width": 16}\n'
    )
    with pytest.raises(DataError, match=r"layouts.jsonl:2"):
        plan.run(_config(world, tmp_path, layouts=str(layouts)))


def test_generate_writes_a_valid_set_with_provenance(world: Path, tmp_path: Path) -> None:
    config = _config(world, tmp_path)
    plan.run(config)
    result = generate.run(config, progress=False)
    assert result.complete and result.shards_done == 6 and result.samples == 12
    report = validate_shard_set(str(tmp_path / "synthetic"))
    assert report.ok and report.rows == 12, report.problems
    shard_set = ShardSet(str(tmp_path / "synthetic"))
    assert shard_set.manifest.generated
    rows, _, _ = read_plan(str(tmp_path / "plan.parquet"))
    samples = list(shard_set.iter_samples())
    assert [s.id for s in samples] == [r["id"] for r in rows]
    first = samples[0]
    assert first.provenance["sampler"] == "ddim" and first.provenance["steps"] == 3 and first.provenance["model_id"]
    assert first.provenance["seed"] == rows[0]["seed"] and first.provenance["source_id"] == rows[0]["source_id"]
    assert first.images["depth"].mode == "I;16" and first.images["thermal"].mode == "L"
    item = ShardDataset(str(tmp_path / "synthetic"), "train")[0]  # what a detector team loads
    assert item["images"]["rgb"].shape == (3, 16, 16) and item["boxes"].shape[1] == 4
    again = generate.run(config, progress=False)
    assert again.shards_done == 0 and again.shards_skipped == 6  # rerun: nothing recomputed


def test_the_model_folder_is_self_contained_and_can_be_moved(world: Path, tmp_path: Path) -> None:
    """Card paths are relative to the folder, the VAE and the noise schedule travel inside it: a copy of the
    folder anywhere else generates exactly what the original does."""
    card = json.loads((world / "unet" / "diffx.json").read_text())
    assert card["vae"] == "vae" and card["scheduler"] == "scheduler"
    assert card["dataset"]["classes"] == list(DEMO_SPEC.classes) and card["max_tokens"] == 16
    schedule = json.loads((world / "unet" / "scheduler" / "scheduler_config.json").read_text())
    assert schedule["beta_schedule"] == "scaled_linear" and schedule["num_train_timesteps"] == 1000
    moved = tmp_path / "uploaded" / "my-model"
    shutil.copytree(world / "unet", moved)
    for name, unet in (("original", world / "unet"), ("moved", moved)):
        raw = _params(world, tmp_path / name)
        raw["generate"]["unet"] = str(unet)
        raw["unet"]["vae"] = str(tmp_path / "no-vae-here")  # generation never looks at the training-time path
        config = parse_config(raw)
        plan.run(config)
        assert generate.run(config, progress=False).complete
    assert _digests(tmp_path / "moved" / "synthetic") == _digests(tmp_path / "original" / "synthetic")


def _command(params: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffx.cli", "generate", "--params", str(params), "--no-progress", *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count everywhere: float reductions in the same order


def _reference(world: Path, tmp_path: Path) -> Path:
    """An uninterrupted run, in a worker process like the others, for bit-for-bit comparison."""
    work = tmp_path / "reference"
    work.mkdir()
    raw = _params(world, work)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    plan.run(parse_config(raw))
    subprocess.run(_command(work / "params.yaml"), env=ENV, check=True, capture_output=True, timeout=600)
    return work


@pytest.mark.slow  # torch.compile / worker processes, 30-70 s
def test_sigkill_at_random_moments_then_resume_gives_the_planned_set(world: Path, tmp_path: Path) -> None:
    reference = _reference(world, tmp_path)
    work = tmp_path / "killed"
    raw = _params(world, work)
    params = work / "params.yaml"
    work.mkdir()
    params.write_text(yaml.safe_dump(raw))
    plan.run(parse_config(raw))
    env = ENV
    rng = np.random.default_rng(7)
    for _ in range(4):
        proc = subprocess.Popen(_command(params), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(2.0, 9.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (work / "synthetic" / "_manifest.json").exists() or validate_shard_set(str(work / "synthetic")).ok
    done = subprocess.run(_command(params), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = validate_shard_set(str(work / "synthetic"))
    assert report.ok and report.rows == 12, report.problems
    assert _digests(work / "synthetic") == _digests(reference / "synthetic")  # bit-for-bit the uninterrupted set
    leftovers = [p.name for p in (work / "synthetic" / "train").iterdir() if ".tmp-" in p.name or p.suffix == ".lock"]
    assert not leftovers


@pytest.mark.slow  # torch.compile / worker processes, 30-70 s
def test_concurrent_workers_never_make_two_files_and_ranks_partition(world: Path, tmp_path: Path) -> None:
    reference = _reference(world, tmp_path)
    env = ENV
    for name, extras in {
        "same": [[], []],
        "ranks": [["--rank", "0", "--world-size", "2"], ["--rank", "1", "--world-size", "2"]],
    }.items():
        work = tmp_path / name
        work.mkdir()
        raw = _params(world, work)
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
        plan.run(parse_config(raw))
        procs = [
            subprocess.Popen(
                _command(work / "params.yaml", *extra),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for extra in extras
        ]
        outputs = [p.communicate(timeout=600) for p in procs]
        # 3: this worker left shards to the other's live lease, so the set was not complete when it stopped
        assert all(p.returncode in (0, 3) for p in procs) and 0 in [p.returncode for p in procs], outputs
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0 or "leased by another live worker" in err, err
        if name == "ranks":  # the last rank to finish sees every shard complete; a plain rerun finalises otherwise
            subprocess.run(_command(work / "params.yaml"), env=env, check=True, capture_output=True, timeout=600)
        names = sorted(p.name for p in (work / "synthetic" / "train").iterdir())
        assert [n for n in names if n.endswith(".parquet")] == [f"part-{i:05d}.parquet" for i in range(6)]
        assert not [n for n in names if ".tmp-" in n or n.endswith(".lock")]
        assert validate_shard_set(str(work / "synthetic")).ok
        assert _digests(work / "synthetic") == _digests(reference / "synthetic")


def test_a_plan_for_other_modalities_is_refused_before_any_work(world: Path, tmp_path: Path) -> None:
    rgb_thermal = DatasetSpec(
        modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
        classes=DEMO_SPEC.classes,
    )
    source = tmp_path / "rt"
    writer = ShardSetWriter(str(source), rgb_thermal)
    writer.finalize(
        writer.write_split(
            "train",
            [
                dataclasses.replace(
                    make_sample("x", width=16, height=16), caption="An image.", caption_source="template"
                )
            ],
            4,
        )
    )
    raw = _params(world, tmp_path, spec=rgb_thermal)
    raw["plan"]["source"] = str(source)
    config = parse_config(raw)
    plan.run(config)
    with pytest.raises(DataError, match="no modality 'depth'"):  # the model needs it: refused before any work
        generate.run(config, progress=False)
    assert not (tmp_path / "synthetic").exists()


def _flip_same_size(path: Path, at: int = 200, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + count] = bytes(255 - b for b in data[at : at + count])
    path.write_bytes(bytes(data))


def test_resume_checks_content_not_size_and_rewrites_an_altered_shard(world: Path, tmp_path: Path) -> None:
    config = _config(world, tmp_path)
    plan.run(config)
    generate.run(config, progress=False)
    before = _digests(tmp_path / "synthetic")
    _flip_same_size(tmp_path / "synthetic" / "train" / "part-00002.parquet")
    result = generate.run(config, progress=False)
    assert result.complete and result.shards_done == 1 and result.shards_skipped == 5
    assert _digests(tmp_path / "synthetic") == before
    assert validate_shard_set(str(tmp_path / "synthetic")).ok


def test_a_lease_left_by_a_dead_worker_on_another_host_is_taken_over(world: Path, tmp_path: Path) -> None:
    """A pod killed on a shared filesystem leaves its lease behind: once it stops beating the shard is redone."""
    config = _config(world, tmp_path)
    plan.run(config)
    lock = tmp_path / "synthetic" / "train" / ".part-00001.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"owner": "x", "host": "pod-gone", "pid": 1, "expires": time.time() - 5}))
    result = generate.run(config, progress=False)
    assert result.complete and result.shards_busy == 0 and not lock.exists()
    # a live holder elsewhere (lease not expired) is respected: that shard is left to it
    shutil.rmtree(tmp_path / "synthetic")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"owner": "x", "host": "pod-alive", "pid": 1, "expires": time.time() + 600}))
    busy = generate.run(config, progress=False)
    assert busy.shards_busy == 1 and not busy.complete


def _requests(rows: list[dict[str, Any]]) -> list[Any]:
    import torch

    from diffx.sample.pipeline import LayoutRequest

    return [
        LayoutRequest(
            r["caption"],
            torch.tensor([o["bbox"] for o in r["objects"]], dtype=torch.float32).reshape(-1, 4),
            torch.tensor([o["category_id"] for o in r["objects"]], dtype=torch.long),
            16,
            16,
            int(r["seed"]),
        )
        for r in rows
    ]


def test_cached_and_bf16_sampling_against_the_fp32_uncached_reference(world: Path, tmp_path: Path) -> None:
    from diffx.metrics.image_metrics import psnr
    from diffx.sample.generate import PlanExecutor

    config = _config(world, tmp_path)
    plan.run(config)
    rows, spec, _ = read_plan(config.generate.plan)
    pipeline = PlanExecutor(config.generate, spec).pipeline
    open_layout_paths(pipeline.unet, seed=0)  # the layout path must matter for the comparison to mean anything
    requests = _requests(rows[:3])
    settings = {"sampler": "dpmsolver++", "steps": 4, "guidance": 3.0}
    reference = pipeline(requests, **settings, cache=False)
    cached = pipeline(requests, **settings)
    bf16 = pipeline(requests, **settings, precision="bf16")
    for name in spec.modality_names:
        assert (cached[name] - reference[name]).abs().max() < 1e-4, name
        assert not bf16[name].isnan().any()
        assert float(psnr(bf16[name], reference[name]).mean()) > 25, name  # close, not identical
    assert pipeline(requests, **settings)["rgb"].equal(cached["rgb"])  # deterministic


def test_composed_guidance_separates_caption_and_layout(world: Path, tmp_path: Path) -> None:
    """Three branches (none, caption, caption + layout): equal scales give back the joint guidance, and a layout
    scale of its own changes the draw; the null branch sees no box in the tokens nor in the painted channels."""
    from diffx.sample.generate import PlanExecutor

    config = _config(world, tmp_path)
    plan.run(config)
    rows, spec, _ = read_plan(config.generate.plan)
    pipeline = PlanExecutor(config.generate, spec).pipeline
    open_layout_paths(pipeline.unet, seed=0)
    assert pipeline.unet.config.box_raster_channels > 0  # the painted-box path is in the draw
    requests = _requests(rows[:3])
    settings = {"sampler": "dpmsolver++", "steps": 4, "guidance": 3.0}
    joint = pipeline(requests, **settings)
    equal = pipeline(requests, **settings, layout_guidance=3.0)
    stronger = pipeline(requests, **settings, layout_guidance=6.0)
    for name in spec.modality_names:
        assert (equal[name] - joint[name]).abs().max() < 1e-4, name
    assert (stronger["rgb"] - joint["rgb"]).abs().max() > 1e-3


@pytest.mark.slow  # torch.compile / worker processes, 30-70 s
def test_compiled_unet_draws_what_the_eager_one_draws(world: Path, tmp_path: Path) -> None:
    """generate.compile runs the UNet through inductor: same images to float rounding, step cache included."""
    from diffx.sample.generate import PlanExecutor

    config = _config(world, tmp_path)
    plan.run(config)
    rows, spec, _ = read_plan(config.generate.plan)
    eager = PlanExecutor(config.generate, spec).pipeline
    compiled_config = with_overrides(config, {"generate.compile": True})
    compiled = PlanExecutor(compiled_config.generate, spec).pipeline
    for pipeline in (eager, compiled):
        open_layout_paths(pipeline.unet, seed=0)
    assert hasattr(compiled.unet, "_compiled_call_impl") and compiled.unet._compiled_call_impl is not None
    requests = _requests(rows[:2])
    settings = {"sampler": "ddim", "steps": 3, "guidance": 3.0}
    reference = eager(requests, **settings)
    got = compiled(requests, **settings)
    for name in spec.modality_names:
        assert (got[name] - reference[name]).abs().max() < 1e-4, name


def test_fp16_without_cuda_is_refused_before_any_work(world: Path, tmp_path: Path) -> None:
    from diffx.errors import ConfigError

    params = _params(world, tmp_path)
    params["generate"]["sampler"]["precision"] = "fp16"
    config = parse_config(params)
    plan.run(config)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        generate.run(config, progress=False)
    assert not (tmp_path / "synthetic").exists()


def test_one_per_item_plans_each_item_once_for_paired_metrics(world: Path, tmp_path: Path) -> None:
    """The paper's protocol: one sample per test item, its layout and caption unchanged, scored against it."""
    import torch

    from diffx.metrics.paired import paired_scores
    from diffx.models.lpips import LPIPS

    from .lpips_reference import weights

    config = _config(world, tmp_path, mode="one_per_item", split="val", num_samples=999, rows_per_shard=1)
    report = plan.run(config)
    rows, _, _ = read_plan(config.plan.output)
    real = ShardSet(str(world / "captioned"))
    items = real.read_table("val", ["id", "caption", "objects"]).to_pylist()
    assert report["rows"] == len(rows) == len(items) == 2  # num_samples plays no part
    for row, item in zip(rows, items, strict=True):
        assert row["source_id"] == item["id"] and row["caption"] == item["caption"] and not row["edited"]
        assert [o["bbox"] for o in row["objects"]] == [pytest.approx(o["bbox"]) for o in item["objects"]]
    generate.run(config, progress=False)
    trunk, heads = weights()
    lpips = LPIPS()
    lpips.features.load_state_dict({k.removeprefix("features."): torch.from_numpy(v) for k, v in trunk.items()})
    lpips.lins.load_state_dict({f"{k}.weight": torch.from_numpy(v) for k, v in enumerate(heads.values())})
    real_val = ShardDataset(str(world / "captioned"), "val")
    synthetic = ShardDataset(config.generate.output, "train")
    scores = paired_scores(real_val, synthetic, list(DEMO_SPEC.modality_names), lpips=lpips)
    assert scores["pairs"] == 2
    for m in DEMO_SPEC.modality_names:
        assert 0 < scores["per_modality"][m]["psnr"] < 60 and scores["per_modality"][m]["lpips"] > 0
    with pytest.raises(DataError, match="not a generated set"):
        paired_scores(real_val, real_val, ["rgb"])
    sampled = _config(world, tmp_path / "sampled", num_samples=4, split="val")  # with replacement: refused
    plan.run(sampled)
    generate.run(sampled, progress=False)
    with pytest.raises(DataError, match="exactly one per item"):
        paired_scores(real_val, ShardDataset(sampled.generate.output, "train"), ["rgb"])
    with pytest.raises(DataError, match="not in split 'train'"):
        paired_scores(ShardDataset(str(world / "captioned"), "train"), synthetic, ["rgb"])

"""MP-VAE training: resume == no stop, 2 processes (gloo) == 1 process, NaN stop, refused inputs, outputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from diffx.config import parse_config
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.errors import ConfigError
from diffx.models.mpvae import MPVAE
from diffx.shards.writer import ShardSetWriter
from diffx.stages import train_vae
from diffx.train.checkpoint import latest_checkpoint, list_checkpoints, pack, unpack
from diffx.train.distributed import init_distributed
from diffx.train.vae import LOG_MSE_FLOOR, TrainingError, VaeTrainer

from .conftest import DEMO_SPEC, make_sample

RGB_THERMAL = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=DEMO_SPEC.classes,
)


def _write_shards(root: Path, spec: DatasetSpec, n_train: int = 8, n_val: int = 2) -> None:
    writer = ShardSetWriter(str(root), spec)
    records = writer.write_split(
        "train", (make_sample(f"t{i}", width=16, height=16, seed=i, boxes=[]) for i in range(n_train)), 4
    )
    records += writer.write_split(
        "val", (make_sample(f"v{i}", "val", width=16, height=16, seed=50 + i, boxes=[]) for i in range(n_val)), 4
    )
    writer.finalize(records)


def _raw_params(tmp: Path, shards: Path, spec: DatasetSpec = DEMO_SPEC, **train: Any) -> dict[str, Any]:
    return {
        "data": {"modalities": [m.model_dump() for m in spec.modalities], "classes": list(spec.classes)},
        "ingest": {
            "source": {
                "format": "coco_folders",
                "root": str(tmp),
                "modalities": {"rgb": "rgb"},
                "annotations": {"train": "a.json"},
            }
        },
        "vae": {
            "data": str(shards),
            "model": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
            "train": {
                "steps": 4,
                "batch_size": 4,
                "lr": 1e-3,
                "warmup_steps": 1,
                "log_every": 1,
                "checkpoint_every": 2,
                "ema_decay": 0.9,
                "device": "cpu",
                "crop": None,  # whole 16 px frames
                "reconstruction_loss": "mse",  # the plain sum the formula tests below start from
                "modality_weights": {},
                **train,
            },
            "scale_batches": 1,
            "eval_samples": 2,
            "output": str(tmp / "model"),
            "checkpoints": str(tmp / "ckpt"),
            "metrics": str(tmp / "vae.json"),
            "report": str(tmp / "vae-run.json"),
            "plots": str(tmp / "loss.csv"),
            "grid": str(tmp / "grid.png"),
        },
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vae-shards") / "canonical"
    _write_shards(root, DEMO_SPEC)
    return root


def _trainer(tmp: Path, shards: Path, name: str, **train: Any) -> VaeTrainer:
    raw = _raw_params(tmp / name, shards, **train)
    return VaeTrainer(parse_config(raw).vae, init_distributed("cpu"), progress=False)


def test_resume_continues_the_same_run(tmp_path: Path, shards: Path) -> None:
    straight = _trainer(tmp_path, shards, "straight")
    straight.run()
    first = _trainer(tmp_path, shards, "resumed")
    first.run(until=2)
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "ckpt")] == ["step-0000002"]
    second = _trainer(tmp_path, shards, "resumed")  # a new process would see exactly this
    assert second.step == 2 and second.resumed_from == 2
    second.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    for key, value in straight.ema.shadow.items():  # type: ignore[union-attr]
        assert torch.equal(value, second.ema.shadow[key]), key  # type: ignore[union-attr]
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in second.history]
    assert straight.history[-1]["loss"] != straight.history[0]["loss"]


def test_data_loader_workers_train_the_same_model_as_the_loop_s_own_process(tmp_path: Path, shards: Path) -> None:
    inline = _trainer(tmp_path, shards, "inline")
    inline.run()
    workers = _trainer(tmp_path, shards, "workers", num_workers=2)  # each worker sets the loop's malloc settings
    workers.run()
    for key, value in inline.model.state_dict().items():
        assert torch.equal(value, workers.model.state_dict()[key]), key


def test_changed_params_do_not_resume_a_foreign_checkpoint(tmp_path: Path, shards: Path) -> None:
    _trainer(tmp_path, shards, "run").run(until=2)
    changed = _trainer(tmp_path, shards, "run", lr=5e-4)
    assert changed.step == 0
    with pytest.raises(ConfigError, match="made with other params"):
        VaeTrainer(
            parse_config(_raw_params(tmp_path / "run", shards, lr=5e-4)).vae,
            init_distributed("cpu"),
            resume_from=str(tmp_path / "run" / "ckpt" / "step-0000002"),
            progress=False,
        )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, shards: Path) -> None:
    trainer = _trainer(tmp_path, shards, "nan", checkpoint_every=1, steps=6)

    def poison(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output * float("nan") if trainer.step == 3 else output

    trainer.model.post_quant_conv.register_forward_hook(poison)
    with pytest.raises(TrainingError, match=r"step 3: the loss is not finite.*step-0000003"):
        trainer.run()
    latest = latest_checkpoint(tmp_path / "nan" / "ckpt")
    assert latest is not None and latest.step == 3
    assert all(torch.isfinite(v).all() for v in latest.tensors("model").values())


@pytest.mark.parametrize("kind", ["mse", "log_mse"])
def test_reconstruction_loss_sums_each_modality_term(tmp_path: Path, shards: Path, kind: str) -> None:
    """The weighted sum over modalities of each one's batch MSE (mse) or of its log (log_mse)."""
    from diffx.train.data import sample_generator
    from diffx.train.vae import NOISE

    weights = {"rgb": 2.0}
    trainer = _trainer(tmp_path, shards, kind, reconstruction_loss=kind, kl_weight=0.0, modality_weights=weights)
    batch, positions = next(trainer._batches(1)), trainer.plan.positions(0, 0, 0)
    loss, parts = trainer.loss(trainer.model, batch, positions)
    images = trainer._prepare(batch, positions)
    factor, channels = trainer.model.downsample_factor, trainer.model.config.latent_channels
    shape = (channels, *(s // factor for s in next(iter(images.values())).shape[-2:]))
    noise = torch.stack([torch.randn(shape, generator=sample_generator(0, p, NOISE)) for p in positions])
    with torch.no_grad():
        recon = trainer.model(images, noise=noise).reconstructions
    expected = 0.0
    for name in DEMO_SPEC.modality_names:
        per_sample = (recon[name] - images[name]).pow(2).flatten(1).mean(dim=1)
        assert parts[f"mse_{name}"] == pytest.approx(float(per_sample.mean()), rel=1e-5)
        term = torch.log(per_sample.mean() + LOG_MSE_FLOOR) if kind == "log_mse" else per_sample.mean()
        expected += weights.get(name, 1.0) * float(term)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_the_modalities_come_from_the_manifest_not_from_params(tmp_path: Path) -> None:
    """params' data section describes the raw source for ingest; a trainer reads what the shards hold."""
    root = tmp_path / "rt"
    _write_shards(root, RGB_THERMAL)
    config = parse_config(_raw_params(tmp_path, root))  # data.modalities: rgb, thermal, depth
    trainer = VaeTrainer(config.vae, init_distributed("cpu"), progress=False)
    assert list(trainer.model.config.modalities) == ["rgb", "thermal"]


def test_checkpoint_from_another_modality_set_is_refused(tmp_path: Path, shards: Path) -> None:
    _trainer(tmp_path, shards, "three").run(until=2)
    root = tmp_path / "rt"
    _write_shards(root, RGB_THERMAL)
    raw = _raw_params(tmp_path / "two", root, spec=RGB_THERMAL)
    with pytest.raises(
        ConfigError, match=r"checkpoint was trained for modalities \[\['rgb', 3\], \['thermal', 1\], \['depth', 1\]\]"
    ):
        VaeTrainer(
            parse_config(raw).vae,
            init_distributed("cpu"),
            progress=False,
            resume_from=str(tmp_path / "three" / "ckpt" / "step-0000002"),
        )


def test_stage_writes_model_metrics_curve_and_grid(tmp_path: Path, shards: Path) -> None:
    config = parse_config(_raw_params(tmp_path, shards))
    result = train_vae.run(config, progress=False)
    assert result.steps == 4
    model = MPVAE.from_pretrained(tmp_path / "model")
    assert model.config.scaling_factor != 0.18215 and model.config.scaling_factor > 0
    metrics = json.loads((tmp_path / "vae.json").read_text())
    assert set(metrics["val"]) == {"rgb", "thermal", "depth"}
    assert all(0 < metrics["val"][m]["psnr"] < 100 and -1 <= metrics["val"][m]["ssim"] <= 1 for m in metrics["val"])
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss,") and len(lines) == 5
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.mode == "RGB" and grid.width > 6 * 16
    assert not (tmp_path / "ckpt").exists()  # spent once the model is written


def test_pack_unpack_keeps_int_keys_and_tensors() -> None:
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]}
    tensors: dict[str, torch.Tensor] = {}
    packed = json.loads(json.dumps(pack(state, tensors)))
    restored = unpack(packed, tensors)
    assert list(restored["state"]) == [0] and torch.equal(restored["state"][0]["exp_avg"], torch.ones(2))
    assert restored["param_groups"] == [{"lr": 0.1}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(params: Path, nproc: int, launcher: str = "torchrun") -> None:
    """The README's launch lines: ``torchrun ... -m diffx.cli`` or ``accelerate launch ... -m diffx.cli``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    port = str(_free_port())
    if launcher == "accelerate":
        accelerate = Path(sys.executable).parent / "accelerate"
        # --multi_gpu picks accelerate's torchrun path (RANK/WORLD_SIZE/MASTER_*); with no GPU our loop takes gloo.
        # (--cpu with several processes would need mpirun/oneCCL instead.)
        head = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(nproc), "--main_process_port", port]
        head += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        head = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"]
    args = [*head, "-m", "diffx.cli", "train-vae", "--params", str(params), "--no-progress"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # torchrun + accelerate processes
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, shards: Path) -> None:
    """Real DDP over gloo: gradients are all-reduced, so 2 x batch 2 == 1 x batch 4 (up to float order), with the
    default loss's per-modality weights."""
    weights = {}
    for nproc in (1, 2):
        raw = _raw_params(
            tmp_path / f"p{nproc}", shards, ema_decay=None, steps=3, hflip=True, modality_weights={"thermal": 2.5}
        )
        params = tmp_path / f"params{nproc}.yaml"
        params.write_text(yaml.safe_dump(raw))
        _launch(params, nproc, launcher="torchrun" if nproc == 1 else "accelerate")  # both launchers work
        weights[nproc] = load_file(str(tmp_path / f"p{nproc}" / "model" / "diffusion_pytorch_model.safetensors"))
        run = json.loads((tmp_path / f"p{nproc}" / "vae-run.json").read_text())
        assert run["processes"] == nproc and run["steps"] == 3
    torch.manual_seed(0)
    initial = VaeTrainer(
        parse_config(_raw_params(tmp_path / "init", shards)).vae, init_distributed("cpu"), resume=False, progress=False
    ).model.state_dict()
    moved = max((weights[1][k] - initial[k]).abs().max().item() for k in weights[1])
    differs = max((weights[1][k] - weights[2][k]).abs().max().item() for k in weights[1])
    # AdamW moves a weight by about lr per step whatever the gradient's scale, so ranks that did not average
    # their gradients would end ~lr * steps apart; float summation order alone stays far below that.
    budget = 1e-3 * 3
    assert moved > 0.5 * budget, "training must move the weights for the comparison to mean anything"
    assert differs < 0.02 * budget, f"2-process weights differ by {differs} (moved {moved})"


def test_kl_is_a_mean_per_latent_element(tmp_path: Path, shards: Path) -> None:
    """The KL weighs the same per element at any crop: summed over C x H x W it grew with the latent area."""
    kls = {}
    for crop in (8, 16):
        trainer = _trainer(tmp_path, shards, f"kl{crop}", kl_weight=1.0, crop=crop)
        positions = trainer.plan.positions(0, 0, 0)
        batch = next(trainer._batches(1))
        loss, parts = trainer.loss(trainer.model, batch, positions)
        posterior = trainer.model.encode(trainer._prepare(batch, positions))
        by_hand = 0.5 * (posterior.mean.pow(2) + posterior.var - 1 - posterior.logvar).mean()
        assert parts["kl"] == pytest.approx(float(by_hand.detach()), rel=1e-5)
        mses = sum(parts[f"mse_{name}"] for name in DEMO_SPEC.modality_names)
        assert float(loss.detach()) == pytest.approx(mses + parts["kl"], rel=1e-5)
        kls[crop] = parts["kl"]
    assert 0.5 < kls[16] / kls[8] < 2.0  # 4x the latent area, not 4x the KL


def test_lpips_term_joins_each_modality_and_the_validation_metrics(tmp_path: Path, shards: Path) -> None:
    import numpy as np

    from .lpips_reference import weights

    trunk, heads = weights()
    torch.save({k: torch.from_numpy(v) for k, v in trunk.items()}, tmp_path / "vgg16.pth")
    torch.save({k: torch.from_numpy(v) for k, v in heads.items()}, tmp_path / "lpips.pth")
    raw = _raw_params(tmp_path / "lp", shards, lpips_weight=0.5, kl_weight=0.0, steps=2)
    raw["vae"]["lpips"] = {"vgg16": str(tmp_path / "vgg16.pth"), "heads": str(tmp_path / "lpips.pth")}
    trainer = VaeTrainer(parse_config(raw).vae, init_distributed("cpu"), progress=False)
    loss, parts = trainer.loss(trainer.model, next(trainer._batches(1)), trainer.plan.positions(0, 0, 0))
    names = DEMO_SPEC.modality_names
    assert all(parts[f"lpips_{n}"] > 0 for n in names)
    expected = sum(parts[f"mse_{n}"] + 0.5 * parts[f"lpips_{n}"] for n in names)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    trainer.run()
    val = trainer.finish(1.0)["val"]
    assert all(np.isfinite(val[n]["lpips"]) and val[n]["baseline_psnr"] > 0 for n in names)
    raw["vae"]["lpips"] = {"vgg16": None, "heads": None}
    with pytest.raises(ConfigError, match=r"lpips_weight > 0 needs vae\.lpips"):
        VaeTrainer(parse_config(raw).vae, init_distributed("cpu"), progress=False)

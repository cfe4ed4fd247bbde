"""Every preset of the paper's tasks runs on CPU: tiny stand-in weights saved in the real folder formats (an SD
v1.x pipeline folder, a Long-CLIP checkpoint with its CLIP tokenizer, a LLaVA folder) at the preset's own
weight paths, and a small dataset in the preset's reader format (tests/task_sources.py).

What changes from the preset is only size: the frame (32 px), the steps, the sample counts. Its reader, layout
kind, modalities, text encoder, captioner, SD initialisation and sampler are the preset's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from diffx import stages
from diffx.config import DiffxConfig, load_config, merge, with_overrides
from diffx.models.folder import ModelFolder
from diffx.models.inception import FIDInceptionV3
from diffx.shards.reader import ShardSet
from diffx.shards.validate import validate_shard_set

from . import inception_reference, lpips_reference, task_sources, tiny_chain
from .conftest import REPO
from .tiny_models import clip_to_openai, tiny_clip, tiny_llava

pytestmark = pytest.mark.slow  # every paper preset chain on tiny stand-ins, 15-30 s each

DIFFX_FOLDERS = {
    "box-rgb-t": ({"rgb": "RGB", "thermal": "T"}, "yolo"),
    "box-rgb-t-d": ({"rgb": "RGB", "thermal": "T", "depth": "D"}, "yolo"),
    "seg-rgb-t-d": ({"rgb": "RGB", "thermal": "T", "depth": "D"}, "label_png"),
    "sod-rgb-d-edge": ({"rgb": "RGB", "depth": "D", "edge": "E"}, "saliency"),
    "face-rgb-nir-swir-t": ({"rgb": "RGB", "nir": "NIR", "swir": "SWIR", "thermal": "T"}, "none"),
}
WRITERS = {
    "seg-rgb-t": task_sources.write_mfnet,
    "sod-rgb-d": task_sources.write_come15k,
    "edge-rgb-d": task_sources.write_come15k,
    **{
        name: (lambda root, n, m=modalities, labels=labels: task_sources.write_diffx_folder(root, n, m, labels))
        for name, (modalities, labels) in DIFFX_FOLDERS.items()
    },
}
SMALL = {  # size only: what a CPU smoke run needs
    "data.frame.resolution": 32,
    "vae.train.crop": None,
    "vae.train.batch_size": 2,
    "vae.train.warmup_steps": 1,
    "vae.eval_samples": 2,
    "unet.train.batch_size": 2,
    "unet.train.warmup_steps": 1,
    "unet.preview_samples": 1,
    "caption.lmm.batch_size": 2,
    "caption.lmm.max_new_tokens": 6,
    "caption.lmm.device": "cpu",
    "plan.num_samples": 2,
    "plan.rows_per_shard": 2,
    "plan.split": "val",
    "generate.batch_size": 2,
    "generate.sampler.steps": 2,
    "quality.docs": None,
}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``weights/`` exactly where the presets look for them (paths relative to the run)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = tmp_path_factory.mktemp("stand-ins")
    weights = root / "weights"
    torch.manual_seed(0)
    sd = weights / "stable-diffusion-v1-4"
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),  # /8, as SD's
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(sd / "vae")
    UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=64,  # the tiny CLIP text tower's width
        norm_num_groups=8,
    ).save_pretrained(sd / "unet")
    clip = tiny_clip(weights / "clip-vit-large-patch14", positions=248)  # the tokenizer folder, and Long-CLIP:
    torch.save(clip_to_openai(clip), weights / "longclip-L.pt")
    tiny_llava(weights / "llava-1.5-7b-hf")
    trunk, heads = lpips_reference.weights()  # LPIPS-VGG in both published formats (.pth, weights-only read)
    torch.save({k: torch.from_numpy(v) for k, v in trunk.items()}, weights / "vgg16-397923af.pth")
    torch.save({k: torch.from_numpy(v) for k, v in heads.items()}, weights / "lpips-vgg-v0.1.pth")
    shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items() if "num_batches" not in k}
    fid = {k: torch.from_numpy(v) for k, v in inception_reference.weights(shapes).items()}
    torch.save(fid, weights / "pt_inception-2015-12-05-6726825d.pth")
    return root


def preset_config(name: str, work: Path) -> DiffxConfig:
    """params.yaml + the preset, its reader pointed at a stand-in dataset, every output under ``work``."""
    preset = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    raw = tiny_chain.apply(merge(yaml.safe_load((REPO / "params.yaml").read_text()), preset))  # then size down
    raw["ingest"]["source"] = {**raw["ingest"]["source"], **WRITERS[name](work / "raw", 3)}

    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_chain.relocated(raw, work), sort_keys=False))
    return load_config(path, (), SMALL)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_paper_preset_runs_its_task_on_tiny_stand_ins(
    name: str, stand_ins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(stand_ins)  # the preset's weight paths (weights/...) resolve as in a user's checkout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = preset_config(name, tmp_path)
    stages.ingest.run(config, progress=False)
    stages.caption.run(config, progress=False)
    stages.refine.run(config)
    stages.train_vae.run(config, progress=False)
    stages.train_unet.run(config, progress=False)
    stages.plan.run(config)
    stages.generate.run(config, progress=False)
    assert validate_shard_set(config.generate.output).ok
    generated = ShardSet(config.generate.output)
    assert generated.spec.modality_names == tuple(m.name for m in config.data.modalities)
    assert generated.spec.layout_kind == config.data.layout_kind
    columns = ["width", "height", *(["layout"] if config.data.layout_kind else [])]
    rows = generated.read_table(config.generate.split, columns).to_pylist()
    assert len(rows) == 2 and all((r["width"], r["height"]) == (32, 32) for r in rows)
    assert config.data.layout_kind is None or all(r["layout"] is not None for r in rows)
    captions = pq.read_table(config.caption.output, columns=["caption_source"]).column(0).to_pylist()
    assert captions and all(source.startswith("lmm:") for source in captions)  # the preset's captioner
    assert ModelFolder(config.generate.unet).card.mask_caption_padding is False  # Long-CLIP as the paper uses it
    vae_val = json.loads(Path(config.vae.metrics).read_text())["val"]  # the paper's loss and metric: LPIPS
    assert all(vae_val[m]["lpips"] >= 0 and "baseline_psnr" in vae_val[m] for m in generated.spec.modality_names)

    # the paper's evaluation protocol: one sample per test item, scored against it, Inception FID
    paired = with_overrides(
        config,
        {
            "plan.mode": "one_per_item",
            "evaluate.paired_split": "val",
            "evaluate.test_split": "val",
            "evaluate.control_shift": 0,
        },
    )
    stages.plan.run(paired)
    stages.generate.run(paired, progress=False)
    stages.curate.run(paired, progress=False)
    metrics = stages.evaluate.run(paired, progress=False).metrics
    assert metrics["feature_extractor"].startswith("inception-v3-fid")
    names = generated.spec.modality_names
    assert metrics["paired"]["pairs"] == 3 and all(metrics["paired"]["per_modality"][m]["lpips"] >= 0 for m in names)
    assert all(metrics["realism"]["generated"][m]["fid"] >= 0 for m in names)
    if config.data.layout_kind in ("segmentation", "saliency"):  # IoU / accuracy, S-measure / MAE
        assert metrics["layout_agreement"]["generated"]

"""Dense layouts end to end, and the frame policy (resize + crop of images, boxes and maps together).

The chain tests run the real stage modules (diffx/stages/) on the procedural demo with its segmentation
maps, at smoke-test size: ingest -> train_vae -> train_unet (dense) -> plan -> generate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffx import stages
from diffx.config import DiffxConfig, load_config
from diffx.data.demo import LAYOUT_CLASSES
from diffx.data.frame import place, place_boxes, place_image
from diffx.data.images import decode_array
from diffx.data.layouts import sobel_edges
from diffx.data.spec import FrameSpec
from diffx.errors import DataError
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.reader import ShardSet
from diffx.shards.validate import validate_shard_set

from . import tiny_chain
from .conftest import REPO
from .tiny_models import TINY_UNET_MODEL


def chain_config(tmp: Path, demo: Path, **overrides: Any) -> DiffxConfig:
    """params.yaml at smoke-test size, every path moved under ``tmp``, reading the demo at ``demo``."""
    raw = tiny_chain.relocated(tiny_chain.apply(yaml.safe_load((REPO / "params.yaml").read_text())), tmp)
    raw["ingest"]["source"]["root"] = str(demo)
    raw["ingest"]["source"]["annotations"] = {"train": "annotations/train.json", "val": "annotations/val.json"}
    for dotted in [k for k, v in overrides.items() if isinstance(v, dict)]:  # mappings replace, never merge
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = overrides.pop(dotted)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    base = {
        "quality.docs": None,
        "vae.model.block_out_channels": [8, 16],
        "vae.model.norm_num_groups": 4,
        "vae.train.crop": None,
        "vae.train.batch_size": 4,
        "unet.model.block_out_channels": TINY_UNET_MODEL["block_out_channels"],
        "unet.model.down_block_types": TINY_UNET_MODEL["down_block_types"],
        "unet.model.up_block_types": TINY_UNET_MODEL["up_block_types"],
        "unet.model.norm_num_groups": TINY_UNET_MODEL["norm_num_groups"],
        "unet.data": str(tmp / "data/canonical"),
        "plan.source": str(tmp / "data/canonical"),
        "plan.split": "val",
        "plan.num_samples": 4,
        "plan.rows_per_shard": 4,
        "generate.batch_size": 4,
    }
    return load_config(path, (), {**base, **overrides})


SEGMENTATION = {
    "data.layout_kind": "segmentation",
    "data.layout_classes": list(LAYOUT_CLASSES),
    "ingest.source.layout": "segmentation",
    "unet.model.layout": "dense",
}


# ------------------------------------------------------------------------------------------ the frame policy
def test_a_frame_is_resized_by_its_short_side_and_cropped_on_the_latent_grid() -> None:
    frame = FrameSpec(resolution=256)
    centred = place(1024, 1280, frame)  # LLVIP
    assert centred.resized == (256, 320) and (centred.height, centred.width) == (256, 256)
    assert (centred.top, centred.left) == (0, 32)
    lefts = {place(1024, 1280, frame, torch.Generator().manual_seed(s)).left for s in range(40)}
    assert lefts <= set(range(0, 65, 8)) and len(lefts) > 3  # random, always on the 8-px grid
    tall = place(530, 730, FrameSpec(resolution=64, crop="none"))  # SUN RGB-D's odd size, aspect kept
    assert (tall.height, tall.width) == (64, 88)
    assert place(128, 160, FrameSpec()).resized == (128, 160)  # no resolution: frames as stored


def test_boxes_follow_the_crop_and_a_box_mostly_cut_off_is_dropped() -> None:
    placement = place(100, 200, FrameSpec(resolution=16, min_box_visible=0.5))  # 16 x 32, centre crop x 8..24
    boxes = torch.tensor(
        [
            [60.0, 10.0, 140.0, 90.0],  # inside: scaled by 0.16, shifted by 8
            [0.0, 10.0, 70.0, 90.0],  # about 0.4 of its area inside: dropped
            [40.0, 10.0, 100.0, 90.0],  # about 0.75 inside: clipped at the crop's left edge, kept
        ]
    )
    kept, labels = place_boxes(boxes, torch.tensor([0, 1, 2]), placement, 0.5)
    assert labels.tolist() == [0, 2]
    assert kept[0].tolist() == pytest.approx([1.6, 1.6, 14.4, 14.4], abs=1e-4)
    assert kept[1, 0].item() == 0.0


def test_label_maps_resize_with_nearest_neighbours_and_keep_their_ids() -> None:
    labels = torch.zeros(1, 40, 60)
    labels[:, 10:30, 20:40] = 7
    placed = place_image(labels, place(40, 60, FrameSpec(resolution=16)), nearest=True)
    assert placed.shape == (1, 16, 16) and set(placed.unique().tolist()) == {0.0, 7.0}


def test_frames_of_different_sizes_are_refused_by_name_without_a_resolution() -> None:
    items = [
        {"id": i, "images": {"rgb": torch.zeros(3, h, 32)}, "boxes": None, "labels": None, "caption": None}
        for i, h in (("a", 24), ("b", 32))
    ]
    with pytest.raises(DataError, match=r"a 32x24, b 32x32.*data\.frame\.resolution"):
        detection_collate(items)


# ------------------------------------------------------------------------------------------ ingest
@pytest.fixture(scope="module")
def seg_chain(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> DiffxConfig:
    """The demo's segmentation chain, resized to 32 px squares, every stage and gate of dvc.yaml in order."""
    tmp = tmp_path_factory.mktemp("seg-chain")
    captioned = {
        "unet.data": str(tmp / "data/captioned"),
        "plan.source": str(tmp / "data/captioned"),
        "quality.captions.max_unresolved_share": 1.0,  # 14 demo captions: one flagged is 7%, nobody reviews here
        "evaluate.test_split": "val",
    }
    config = chain_config(tmp, demo_root, **SEGMENTATION, **captioned, **{"data.frame.resolution": 32})
    stages.ingest.run(config, progress=False)
    assert stages.check.run("ingest", config).success
    stages.caption.run(config, progress=False)
    stages.refine.run(config)
    assert stages.check.run("captions", config).success
    stages.train_vae.run(config, progress=False)
    stages.train_unet.run(config, progress=False)
    stages.plan.run(config)
    stages.generate.run(config, progress=False)
    assert stages.check.run("generated", config).success
    stages.curate.run(config, progress=False)
    stages.evaluate.run(config, progress=False)
    return config


def test_segmentation_maps_are_ingested_with_their_class_list(seg_chain: DiffxConfig, demo_root: Path) -> None:
    shard_set = ShardSet(seg_chain.ingest.output)
    assert shard_set.spec.layout_kind == "segmentation" and shard_set.spec.layout_classes == LAYOUT_CLASSES
    row = shard_set.read_table("train", ["id", "layout"]).to_pylist()[0]
    stored = decode_array(row["layout"]["bytes"], "layout")
    on_disk = np.asarray(Image.open(demo_root / "segmentation" / f"{row['id']}.png"))
    assert np.array_equal(stored, on_disk)  # lossless: the model frame is made at read time


def test_the_dataset_gives_model_frames_with_the_map_and_boxes_placed_alike(seg_chain: DiffxConfig) -> None:
    dataset = ShardDataset(seg_chain.ingest.output, "train")
    item = dataset[0]  # 64 x 48 demo frame -> 43 x 32 -> centre 32 x 32
    assert item["images"]["rgb"].shape == (3, 32, 32) and item["layout"].shape == (1, 32, 32)
    assert set(item["layout"].unique().tolist()) <= set(range(len(LAYOUT_CLASSES)))
    whole = dataset.item(0, crop=False)
    assert whole["images"]["rgb"].shape == (3, 32, 40)  # 43 resized, on the grid only when cropped
    for box, label in zip(item["boxes"], item["labels"], strict=True):  # each box holds pixels of its class
        x0, y0, x1, y1 = (round(v) for v in box.tolist())
        region = item["layout"][0, y0:y1, x0:x1]
        assert (region == LAYOUT_CLASSES.index(dataset.spec.classes[int(label)])).any()


def test_a_dense_unet_trains_and_generates_shards_that_carry_their_maps(seg_chain: DiffxConfig) -> None:
    generated = seg_chain.generate.output
    assert validate_shard_set(generated).ok
    shard_set = ShardSet(generated)
    assert shard_set.spec.layout_kind == "segmentation"
    rows = shard_set.read_table(seg_chain.generate.split, ["id", "width", "height", "layout"]).to_pylist()
    assert len(rows) == 4 and all((r["width"], r["height"]) == (32, 32) for r in rows)
    import pyarrow.parquet as pq

    plan = {r["id"]: r["layout"] for r in pq.read_table(seg_chain.plan.output).to_pylist()}
    assert all(r["layout"]["bytes"] == plan[r["id"]] for r in rows)  # the map each sample was drawn from
    assert Path(seg_chain.unet.grid).is_file()  # the preview shows the map beside the samples


def test_the_evaluation_measures_layout_agreement_of_real_generated_and_control(seg_chain: DiffxConfig) -> None:
    import json

    report = json.loads(Path(seg_chain.evaluate.report).read_text())
    agreement = report["layout_agreement"]
    assert agreement["kind"] == "segmentation"
    assert set(agreement) == {"kind", "real_test", "generated", "control_misaligned"}
    scores = [v for k, v in agreement.items() if k != "kind"]
    assert all(0.0 <= v["miou"] <= 1.0 and 0.0 <= v["pixel_accuracy"] <= 1.0 for v in scores)
    headline = json.loads(Path(seg_chain.evaluate.metrics).read_text())
    assert set(headline["layout_agreement_miou"]) == {"real_test", "generated", "control_misaligned"}
    assert (Path(seg_chain.evaluate.output) / "layout_net" / "config.json").is_file()


def test_a_corrupt_layout_map_fails_the_gate_by_name(tmp_path: Path, demo_root: Path) -> None:
    from diffx.quality.gate import GateFailed
    from diffx.shards.writer import ShardSetWriter

    config = chain_config(tmp_path, demo_root, **{"data.layout_kind": "edges"})
    stages.ingest.run(config, progress=False)
    shard_set = ShardSet(config.ingest.output)
    samples = list(shard_set.iter_samples("train"))
    cut = samples[0].layout
    samples[0].layout = dataclasses.replace(cut, data=cut.data[:40])  # a truncated PNG
    bad = tmp_path / "bad"
    writer = ShardSetWriter(str(bad), shard_set.spec)
    writer.finalize(writer.write_split("train", samples, 4))
    with pytest.raises(GateFailed, match="layout map missing, corrupt"):
        stages.check.run("ingest", config, data=str(bad))


def test_a_dense_model_needs_data_with_a_dense_layout(tmp_path: Path, demo_root: Path) -> None:
    config = chain_config(tmp_path, demo_root, **{"unet.model.layout": "dense"})
    stages.ingest.run(config, progress=False)
    with pytest.raises(DataError, match="layout_kind is null"):
        stages.train_unet.run(config, progress=False)


def test_edges_are_computed_from_rgb_when_the_source_has_none(tmp_path: Path, demo_root: Path) -> None:
    config = chain_config(tmp_path, demo_root, **{"data.layout_kind": "edges"})
    stages.ingest.run(config, progress=False)
    row = ShardSet(config.ingest.output).read_table("train", ["id", "rgb", "layout"]).to_pylist()[0]
    edges, rgb = decode_array(row["layout"]["bytes"], "layout"), decode_array(row["rgb"]["bytes"], "rgb")
    assert np.array_equal(edges, sobel_edges(rgb))


def test_label_values_beyond_the_class_list_are_quarantined_by_name(tmp_path: Path, demo_root: Path) -> None:
    few = {**SEGMENTATION, "data.layout_classes": ["sky", "road"], "ingest.max_quarantine_fraction": 1.0}
    config = chain_config(tmp_path, demo_root, **few)
    with pytest.raises(DataError, match=r"label value \d+ but layout_classes has 2 names"):
        stages.ingest.run(config, progress=False)


# ------------------------------------------------------------------------------------------ real frame sizes
REAL_CHAINS = {
    "llvip": (  # 1280 x 1024 visible + infrared pairs
        {"format": "voc_pairs", "modalities": {"rgb": "visible/{split}", "thermal": "infrared/{split}"}},
        [{"name": "rgb", "channels": 3}, {"name": "thermal", "channels": 1}],
        ["person", "bicycle", "car"],
        "train",
    ),
    "sunrgbd": (  # 640 x 480 and 730 x 530 RGB + 16-bit depth in one set
        {
            "format": "sunrgbd",
            "labels": "votenet_fixture/label",
            "ignore_categories": ["chair", "table", "sofa", "desk", "bookshelf", "pillow"],
        },
        [{"name": "rgb", "channels": 3}, {"name": "depth", "channels": 1, "bit_depth": 16, "scale": 0.001}],
        ["bed", "night_stand", "dresser", "lamp", "ottoman", "dresser_mirror"],
        "val",
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_CHAINS))
def test_real_sets_run_ingest_train_generate_at_256_px(realdata: Path, tmp_path: Path, name: str) -> None:
    source, modalities, classes, held_out = REAL_CHAINS[name]
    config = chain_config(
        tmp_path,
        realdata / name,
        **{
            "ingest.source": {**source, "root": str(realdata / name)},
            "data.modalities": modalities,
            "data.classes": classes,
            "data.frame.resolution": 256,
            "vae.model.block_out_channels": [8, 8, 16, 16],  # /8 as SD's: a 32 x 32 latent for the UNet
            "vae.val_split": held_out,
            "vae.eval_samples": 2,
            "unet.preview_split": held_out,
            "unet.preview_samples": 1,
            "plan.split": held_out,
            "plan.num_samples": 2,
            "plan.class_targets": {},
        },
    )
    stages.ingest.run(config, progress=False)
    stages.train_vae.run(config, progress=False)
    stages.train_unet.run(config, progress=False)
    stages.plan.run(config)
    stages.generate.run(config, progress=False)
    assert validate_shard_set(config.generate.output).ok
    rows = ShardSet(config.generate.output).read_table(config.generate.split, ["width", "height"]).to_pylist()
    assert [(r["width"], r["height"]) for r in rows] == [(256, 256)] * 2


# ------------------------------------------------------------------------------------------ presets
PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def test_there_is_a_preset_for_every_task_of_the_paper_and_the_demo() -> None:
    names = {p.stem for p in PRESETS}
    assert names == {
        "box-rgb-t",
        "seg-rgb-t",
        "sod-rgb-d",
        "edge-rgb-d",
        "box-rgb-t-d",
        "seg-rgb-t-d",
        "sod-rgb-d-edge",
        "face-rgb-nir-swir-t",
        "demo-seg",
        "demo-full",
    }


PAPER_AND_SEG = [p for p in PRESETS if p.stem != "demo-full"]


@pytest.mark.parametrize("preset", PAPER_AND_SEG, ids=lambda p: p.stem)
def test_each_preset_passes_params_check_with_its_own_reader(preset: Path) -> None:
    config = load_config(REPO / "params.yaml", (preset,))
    overlay = yaml.safe_load(preset.read_text())
    wanted = overlay["ingest"]["source"].get("format", "coco_folders")
    assert config.ingest.source.format == wanted  # another reader replaces the demo's, never merges into it
    if preset.stem != "demo-seg":
        assert config.data.frame.resolution == 512 and config.generate.sampler.sampler == "pndm"
        assert config.generate.sampler.steps == 50 and config.generate.sampler.guidance == 5.0
        assert config.unet.model.init_from_sd and config.conditioning.text_encoder.startswith("longclip:")
    assert (config.unet.model.layout == "dense") == (config.data.layout_kind is not None)

"""The evaluation: metrics that can tell good from bad, and the stage end to end on demo shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffx.config import FeatureConfig
from diffx.errors import ConfigError
from diffx.metrics.alignment import alignment, shift_image
from diffx.metrics.coco_map import coco_scores
from diffx.metrics.features import RandomConvFeatures, build_extractor, extract
from diffx.metrics.realism import fid, precision_recall, realism
from diffx.models.detector import CenterNet, decode, encode_targets
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.stages import curate, evaluate
from diffx.stages.evaluate import headline
from tests.conftest import LEARNING_DETECTOR_TRAIN, ingest_demo, make_config

CLASSES = ["person", "bicycle", "car"]


@pytest.fixture(scope="module")
def canonical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_demo(tmp_path_factory.mktemp("eval"), {"train": 32, "val": 12, "test": 12}, rows_per_shard=16)


def _images(root: Path, split: str) -> dict[str, Any]:
    dataset = ShardDataset(str(root), split)
    return detection_collate([dataset[i] for i in range(len(dataset))])


# ------------------------------------------------------------------------------------------ alignment
def test_real_pairs_are_registered_and_a_shifted_pair_scores_badly(canonical: Path) -> None:
    batch = _images(canonical, "train")
    rgb, thermal = batch["images"]["rgb"], batch["images"]["thermal"]
    real = alignment(rgb, thermal)
    shifted = alignment(rgb, shift_image(thermal, 4, -3))
    assert real["registered_share"] >= 0.8
    assert shifted["registered_share"] <= 0.1
    assert shifted["edge_correlation"] < real["edge_correlation"] - 0.1


def test_shift_image_moves_content_and_keeps_the_size() -> None:
    image = torch.zeros(1, 1, 10, 12)
    image[0, 0, 4, 5] = 1.0
    moved = shift_image(image, 2, -3)
    assert moved.shape == image.shape
    assert moved[0, 0, 6, 2] == 1.0 and moved.sum() == 1.0


# ------------------------------------------------------------------------------------------ realism
def test_random_features_are_seeded() -> None:
    images = torch.rand(4, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    a = RandomConvFeatures(64, seed=1)(images)
    assert torch.equal(a, RandomConvFeatures(64, seed=1)(images))
    assert not torch.allclose(a, RandomConvFeatures(64, seed=2)(images))


def test_fid_ranks_real_above_degraded(canonical: Path) -> None:
    extractor = RandomConvFeatures(64, seed=0)
    train, val = _images(canonical, "train")["images"]["rgb"], _images(canonical, "val")["images"]["rgb"]
    noisy = (val + 0.3 * torch.randn(val.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    f_train, f_val, f_noisy = (extract(extractor, x) for x in (train, val, noisy))
    assert fid(f_train, f_train) == pytest.approx(0.0, abs=1e-3)
    assert fid(f_train, f_noisy) > 2 * fid(f_train, f_val)
    assert precision_recall(f_train, f_train) == (1.0, 1.0)
    precision, _ = precision_recall(f_train, f_noisy)
    assert precision < 0.5
    summary = realism(f_train, f_val, kid_subset_size=8, kid_subsets=10, k=3)
    assert summary == realism(f_train, f_val, kid_subset_size=8, kid_subsets=10, k=3)  # KID's subsets are seeded
    assert summary["real_samples"] == len(train)


def test_inception_without_local_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inception_weights"):
        build_extractor(FeatureConfig(extractor="inception"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_extractor(FeatureConfig(extractor="inception", inception_weights=str(tmp_path / "missing.pth")))


# ------------------------------------------------------------------------------------------ detection
def _truth() -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (np.array([[8.0, 12.0, 24.0, 40.0], [40.0, 20.0, 72.0, 36.0]]), np.array([0, 2])),
        (np.array([[4.0, 4.0, 20.0, 16.0]]), np.array([1])),
    ]


def test_coco_scores_perfect_shifted_and_empty() -> None:
    truth = _truth()
    perfect = [(b, np.ones(len(b)), lab) for b, lab in truth]
    scores = coco_scores(truth, perfect, CLASSES, (48, 80))
    assert scores.map50 == pytest.approx(1.0) and scores.map50_95 == pytest.approx(1.0)
    shifted = [(b + 6.0, np.ones(len(b)), lab) for b, lab in truth]
    worse = coco_scores(truth, shifted, CLASSES, (48, 80))
    assert worse.map50_95 < 0.5
    wrong_class = [(b, np.ones(len(b)), (lab + 1) % 3) for b, lab in truth]
    assert coco_scores(truth, wrong_class, CLASSES, (48, 80)).map50 == 0.0
    empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)) for _ in truth]
    assert coco_scores(truth, empty, CLASSES, (48, 80)).map50 == 0.0


def test_ap50_by_object_size_splits_at_the_given_sides() -> None:
    """Sides (sqrt of area) 21 and 23 px are medium, 14 px small at edges 16 / 32; nothing is large."""
    truth = _truth()
    only_small = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)), (truth[1][0], np.ones(1), truth[1][1])]
    scores = coco_scores(truth, only_small, CLASSES, (48, 80), size_edges=(16.0, 32.0))
    assert scores.ap50_by_size == {"small": 1.0, "medium": 0.0, "large": None}
    assert coco_scores(truth, only_small, CLASSES, (48, 80), size_edges=(8.0, 12.0)).ap50_by_size["large"] is not None
    assert scores.summary()["ap50_by_size"] == scores.ap50_by_size


def test_decoding_the_encoded_targets_recovers_the_boxes() -> None:
    """Targets and decoding agree: a network that outputs its targets exactly scores mAP 1.0."""
    truth = _truth()
    encoded = [encode_targets(b, lab, 3, 12, 20) for b, lab in truth]
    heat = torch.from_numpy(np.stack([e["heatmap"] for e in encoded])).clamp(1e-6, 1 - 1e-6)
    outputs = {
        "heatmap": torch.log(heat / (1 - heat)),
        "size": torch.from_numpy(np.stack([e["size"] for e in encoded])),
        "offset": torch.from_numpy(np.stack([e["offset"] for e in encoded])),
    }
    found = decode(outputs, (48, 80), score_threshold=0.99)
    for (boxes, labels), got in zip(truth, found, strict=True):
        order = np.argsort(got["labels"].numpy(), kind="stable")
        assert np.allclose(got["boxes"].numpy()[order], boxes[np.argsort(labels, kind="stable")], atol=1e-4)


def test_detector_pads_any_size_and_round_trips(tmp_path: Path) -> None:
    model = CenterNet(
        in_channels=5, num_classes=3, width=16, inputs=("rgb", "thermal", "depth"), classes=tuple(CLASSES)
    )
    out = model(torch.zeros(2, 5, 48, 80))
    assert out["heatmap"].shape == (2, 3, 12, 20)
    model.save_pretrained(tmp_path / "det")
    assert (tmp_path / "det" / "diffusion_pytorch_model.safetensors").exists()
    again = CenterNet.from_pretrained(tmp_path / "det")
    assert again.config.inputs == ("rgb", "thermal", "depth") or list(again.config.inputs) == [
        "rgb",
        "thermal",
        "depth",
    ]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------ the stage
def _eval_config(canonical: Path, tmp: Path, **evaluate: Any) -> Any:
    options = {
        "real": str(canonical),
        "reference_split": "train",
        "test_split": "test",
        "synthetic": str(canonical),  # the real val split stands in for a generator that is perfect
        "synthetic_split": "val",
        "features": {"dims": 64},
        "kid_subset_size": 8,
        "kid_subsets": 10,
        "control_shift": 6,
        "detector": {"width": 16},
        "detector_train": LEARNING_DETECTOR_TRAIN,
        "grid_samples": 3,
        "output": str(tmp / "detector"),
        "checkpoints": str(tmp / "ckpt"),
        "metrics": str(tmp / "eval.json"),
        "report": str(tmp / "eval-report.json"),
        "plots": str(tmp / "plots"),
        "grid": str(tmp / "samples.png"),
        "detector_seeds": [0, 1],
        "recipes": [
            {"name": "synthetic_half", "ratio": 0.5},
            {"name": "curated_pretrain", "pool": "curated", "mode": "pretrain_finetune"},
            {"name": "again", "ratio": 0.25, "pool": "real"},  # the control: real rows drawn again
        ],
        "curated": str(tmp / "curated"),
        "real_detector": str(tmp / "detector_real"),
        **evaluate,
    }
    curate = {
        "synthetic": str(canonical),
        "split": "val",
        "output": str(tmp / "curated"),
        "scores": str(tmp / "curate" / "scores.parquet"),
        "report": str(tmp / "curate.json"),
        "detector": str(tmp / "detector_real"),
        "checkpoints": str(tmp / "ckpt-curate"),
    }
    return make_config(canonical.parent / "raw", canonical, evaluate=options, curate=curate)


@pytest.fixture(scope="module")
def evaluated(canonical: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """curate (which trains the first seed's real detector), then evaluate with two seeds and two recipes."""
    tmp = tmp_path_factory.mktemp("evaluated")
    config = _eval_config(canonical, tmp)
    curate.run(config, progress=False)
    result = evaluate.run(config, progress=False)
    return tmp, result.metrics


@pytest.mark.slow  # the evaluated fixture trains every detector, ~60 s
def test_stage_writes_every_metric_plot_grid_and_every_detector(evaluated: tuple[Path, dict[str, Any]]) -> None:
    tmp, metrics = evaluated
    assert json.loads((tmp / "eval-report.json").read_text()) == metrics
    summary = json.loads((tmp / "eval.json").read_text())  # the headline: a few numbers read off the report
    assert summary == headline(metrics)
    assert summary["map50"]["real"] == metrics["downstream"]["recipes"]["real"]["map50"]["mean"]
    assert set(summary["fid"]) == {"rgb", "thermal", "depth"}
    assert set(summary["registered_share"]) == {"thermal", "depth"}
    for modality in ("rgb", "thermal", "depth"):
        assert set(metrics["realism"]["generated"][modality]) >= {"fid", "kid", "precision", "recall"}
    assert set(metrics["alignment"]["generated"]) == {"thermal", "depth"}
    recipes = metrics["downstream"]["recipes"]
    assert list(recipes) == ["real", "synthetic_half", "curated_pretrain", "again"]
    train_samples = metrics["downstream"]["train_samples"]
    reference = train_samples["real"]
    assert train_samples["again@1"] == reference + round(0.25 * reference)  # real rows, then a quarter again
    for name in ("synthetic_half", "curated_pretrain", "again"):
        gain = recipes[name]["gain_map50"]
        pairs = zip(recipes["real"]["per_seed"], recipes[name]["per_seed"], strict=True)
        assert gain["mean"] == pytest.approx(np.mean([b - a for a, b in pairs]), abs=1e-4)
        assert gain["low"] <= gain["mean"] <= gain["high"]
        assert summary["recipe_gain_map50"][name] == gain
        assert set(recipes[name]["gain_ap50_per_class"]) <= set(CLASSES)
    assert metrics["downstream"]["real_detector_from_curate"]  # curate's detector, not a second one
    assert metrics["feature_extractor"].startswith("random-conv")
    for name in ("pr_real.csv", "pr_synthetic_half.csv", "loss_real.csv", "loss_curated_pretrain.csv"):
        assert (tmp / "plots" / name).read_text().count("\n") > 2
    gains = (tmp / "plots" / "recipe_gains.csv").read_text().splitlines()
    assert gains[0] == "recipe,class,gain_map50,low,high" and gains[1].startswith("synthetic_half,all,")
    assert (tmp / "samples.png").read_bytes()[:4] == b"\x89PNG"
    for label in ("real", "real@1", "synthetic_half", "synthetic_half@1", "curated_pretrain", "curated_pretrain@1"):
        assert (tmp / "detector" / label / "diffusion_pytorch_model.safetensors").exists()
    reused = tmp / "detector" / "real" / "diffusion_pytorch_model.safetensors"
    assert reused.read_bytes() == (tmp / "detector_real" / "diffusion_pytorch_model.safetensors").read_bytes()


@pytest.mark.slow  # the evaluated fixture trains every detector, ~60 s
def test_the_detector_learns_and_the_misaligned_control_scores_worse(evaluated: tuple[Path, dict[str, Any]]) -> None:
    _, metrics = evaluated
    fidelity = metrics["layout_fidelity"]
    assert fidelity["real_test"]["map50"] > 0.2  # the real-data detector learned something
    assert fidelity["generated"]["map50"] > 0.2  # the "generated" set is real data: its layout is followed
    assert fidelity["control_misaligned"]["map50"] < 0.5 * fidelity["generated"]["map50"]
    for modality in ("thermal", "depth"):
        aligned = metrics["alignment"]["generated"][modality]
        control = metrics["alignment"]["control_misaligned"][modality]
        assert control["registered_share"] < aligned["registered_share"]
        assert control["edge_correlation"] < aligned["edge_correlation"]


def test_an_unknown_detector_input_is_refused(canonical: Path, tmp_path: Path) -> None:
    config = _eval_config(canonical, tmp_path, detector={"inputs": ["rgb", "nir"]})
    with pytest.raises(ConfigError, match="nir"):
        evaluate.run(config, progress=False)


class _CountingDataset(ShardDataset):
    """A real shard dataset that counts how often each row is decoded."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.decoded: dict[int, int] = {}

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.decoded[index] = self.decoded.get(index, 0) + 1
        return super().__getitem__(index)


def test_one_decode_feeds_every_view_with_what_separate_passes_give(canonical: Path, tmp_path: Path) -> None:
    from diffx.metrics.measure import View, measure_set
    from diffx.stages.evaluate import control_transform

    options = _eval_config(canonical, tmp_path).evaluate
    torch.manual_seed(0)
    modalities = ("rgb", "thermal", "depth")
    detector = CenterNet(in_channels=5, num_classes=3, width=8, inputs=modalities, classes=tuple(CLASSES))
    detector.eval()
    extractor, _ = build_extractor(options.features)
    views = [View("plain", None, {"d": detector}), View("shifted", control_transform(6), {"d": detector})]
    dataset = _CountingDataset(str(canonical), "val")
    together = measure_set(dataset, views, extractor, options, keep_first=3)
    assert dataset.decoded == dict.fromkeys(range(len(dataset)), 1)  # every row decoded once, for both views
    assert together.first_batch is not None and len(together.first_batch["boxes"]) == 3
    for view in views:
        alone = measure_set(ShardDataset(str(canonical), "val"), [view], extractor, options)
        for modality, features in alone.sets[view.name].features.items():
            torch.testing.assert_close(together.sets[view.name].features[modality], features)
        assert together.sets[view.name].alignment() == alone.sets[view.name].alignment()
        assert together.scores[(view.name, "d")].summary() == alone.scores[(view.name, "d")].summary()
    assert together.sets["plain"].alignment() != together.sets["shifted"].alignment()


def test_a_detections_only_measure_finds_what_the_full_one_does_and_skips_features_and_alignment(
    canonical: Path, tmp_path: Path
) -> None:
    """Curate's recall on real frames reads only detections: without an extractor the pass must give the same
    finds and scores, and carry no features or alignment that a caller could mistake for measured ones."""
    from diffx.metrics.measure import View, measure_set

    options = _eval_config(canonical, tmp_path).evaluate
    torch.manual_seed(0)
    modalities = ("rgb", "thermal", "depth")
    detector = CenterNet(in_channels=5, num_classes=3, width=8, inputs=modalities, classes=tuple(CLASSES))
    detector.eval()
    view = View("plain", None, {"d": detector})
    extractor, _ = build_extractor(options.features)
    full = measure_set(ShardDataset(str(canonical), "val"), [view], extractor, options)
    finds_only = measure_set(ShardDataset(str(canonical), "val"), [view], None, options)
    assert finds_only.sets["plain"].features == {}
    assert finds_only.sets["plain"].edge_correlation == {} and finds_only.sets["plain"].best_shift == {}
    assert full.sets["plain"].features and full.sets["plain"].edge_correlation  # the full pass did measure them
    assert finds_only.ids == full.ids
    for ours, theirs in zip(finds_only.found[("plain", "d")], full.found[("plain", "d")], strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
    assert finds_only.scores[("plain", "d")].summary() == full.scores[("plain", "d")].summary()

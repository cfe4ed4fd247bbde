"""Curation: the scores, the selection rules, and the stage on a set where half the layouts are wrong."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from diffx.config import CurateLabelsConfig, CurateRulesConfig
from diffx.curate.labels import RowLabels, choose_labels, to_stored_frame
from diffx.curate.scores import box_iou, outlier_ratio, planned_box_hits
from diffx.curate.select import BACKGROUND, SampleScore, main_class, select
from diffx.data.frame import place, place_boxes
from diffx.data.sample import BoxObject
from diffx.data.spec import FrameSpec
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages import curate
from tests.conftest import LEARNING_DETECTOR_TRAIN, ingest_demo, make_config

CLASSES = ["person", "bicycle", "car"]


# ------------------------------------------------------------------------------------------ scores
def test_box_iou_of_same_disjoint_and_half_overlapping_boxes() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], dtype=float)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 0.0, 50 / 150])
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)


def test_a_planned_box_is_hit_by_a_confident_same_class_find_used_once() -> None:
    planned = (np.array([[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 50]], dtype=float), np.array([0, 0, 2]))
    found = (
        np.array([[0, 0, 10, 10], [40, 40, 50, 50], [40, 40, 50, 50]], dtype=float),
        np.array([0.9, 0.95, 0.1]),
        np.array([0, 1, 2]),  # the confident find at the car is a bicycle; the car find is below the threshold
    )
    hits = planned_box_hits(planned, found, score_threshold=0.3, iou=0.5)
    assert hits.tolist() == [True, False, False]  # one find matches one planned box, not both overlapping ones
    assert planned_box_hits(planned, found, score_threshold=0.05, iou=0.5).tolist() == [True, False, True]


def test_a_far_sample_is_an_outlier_and_a_typical_one_is_not() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(64, 8, generator=generator)
    samples = torch.stack([reference[:5].mean(0), torch.full((8,), 10.0)])
    ratio = outlier_ratio(reference, samples, k=3)
    assert ratio[0] < 1.5 < 5 < ratio[1]


# ------------------------------------------------------------------------------------------ labels
PLANNED = (np.array([[0, 0, 10, 10], [40, 40, 50, 50]], dtype=float), np.array([0, 2]))
FOUND = (  # the person where planned; the car missed; a confident bicycle where nothing was planned; a weak car
    np.array([[1, 0, 10, 10], [80, 0, 90, 20], [60, 60, 70, 70]], dtype=float),
    np.array([0.9, 0.8, 0.35]),
    np.array([0, 1, 2]),
)


def _chosen(source: str, **options: float | None) -> RowLabels:
    config = CurateLabelsConfig(source=source, **options)  # type: ignore[arg-type]
    return choose_labels(PLANNED, FOUND, config, score_threshold=0.3, iou=0.5)


def test_plan_labels_are_the_planned_boxes_unchanged() -> None:
    chosen = _chosen("plan")
    np.testing.assert_array_equal(chosen.boxes, PLANNED[0])
    assert chosen.labels.tolist() == [0, 2] and (chosen.from_plan, chosen.added) == (2, 0)


def test_verified_labels_keep_found_planned_boxes_and_adopt_confident_new_finds() -> None:
    chosen = _chosen("verified")  # adopt_score 0.5: the bicycle joins, the weak car does not; the missed car goes
    assert chosen.labels.tolist() == [0, 1] and (chosen.from_plan, chosen.added) == (1, 1)
    np.testing.assert_array_equal(chosen.boxes, [[0, 0, 10, 10], [80, 0, 90, 20]])  # the plan's box where confirmed
    never = _chosen("verified", adopt_score=None)
    assert never.labels.tolist() == [0] and never.added == 0
    near = _chosen("verified", adopt_max_iou=0.0)  # a find must not touch any planned box: IoU 0 is not below 0
    assert near.added == 0


def test_detector_labels_are_its_finds_above_the_score_threshold() -> None:
    chosen = _chosen("detector")
    assert chosen.labels.tolist() == [0, 1, 2] and (chosen.from_plan, chosen.added) == (0, 3)
    np.testing.assert_array_equal(chosen.boxes, FOUND[0])


def test_boxes_go_back_to_the_stored_frame_of_a_resized_and_cropped_row() -> None:
    frame = FrameSpec(resolution=64, crop="square")
    placement = place(96, 160, frame)  # resized to 64 x 107, a centred 64 px square cut from it
    stored = torch.tensor([[30.0, 10.0, 60.0, 50.0], [0.0, 0.0, 4.0, 4.0]])  # the second lies outside the crop
    labels = torch.tensor([2, 1])
    moved, kept = place_boxes(stored, labels, placement, 0.5)
    assert kept.tolist() == [2]
    back = to_stored_frame(RowLabels(moved.numpy().astype(float), kept.numpy(), 1, 0), placement)
    np.testing.assert_allclose(back.boxes, stored[:1].numpy(), atol=1e-4)
    outside = RowLabels(np.array([[-20.0, -20.0, -10.0, -5.0]]), np.array([0]), 0, 1)  # off the stored frame
    gone = to_stored_frame(outside, place(96, 96, FrameSpec()))
    assert len(gone.boxes) == 0 and gone.added == 0


# ------------------------------------------------------------------------------------------ selection
def _score(i: int, group: str, recall: float | None, outlier: float = 1.0, shift: int = 0) -> SampleScore:
    return SampleScore(f"s{i}", group, 2, int((recall or 0) * 2), recall, outlier, shift)


def test_the_best_share_of_every_group_is_kept_so_the_class_mix_holds() -> None:
    scores = [_score(i, "car", r) for i, r in enumerate([1.0, 0.5, 0.5, 0.0])]
    scores += [_score(10 + i, "bicycle", r) for i, r in enumerate([0.0, 0.5])]
    scores.append(_score(20, BACKGROUND, None))
    select(scores, CurateRulesConfig(keep_share=0.5))
    assert {s.id for s in scores if s.kept} == {"s0", "s1", "s11", "s20"}  # ties: the lower id; ceil(share * n)
    assert all(s.reason for s in scores)


def test_threshold_rules_drop_first_and_say_why() -> None:
    scores = [_score(0, "car", 0.0), _score(1, "car", 1.0, outlier=9.0), _score(2, "car", 1.0, shift=4)]
    scores.append(_score(3, "car", 1.0))
    select(scores, CurateRulesConfig(min_recall=0.5, max_outlier=3.0, max_shift_px=2, keep_share=1.0))
    assert [s.kept for s in scores] == [False, False, False, True]
    assert "recall" in scores[0].reason and "outlier" in scores[1].reason and "shift" in scores[2].reason


def test_the_main_class_is_the_most_planned_one() -> None:
    assert main_class([2, 2, 0], CLASSES) == "car"
    assert main_class([1, 0], CLASSES) == "person"  # a tie goes to the lower class id
    assert main_class([], CLASSES) == BACKGROUND


# ------------------------------------------------------------------------------------------ the stage
def _moved(box: BoxObject, by: float, width: int) -> BoxObject:
    """The box half a frame to the side (right if it fits, else left): off its object for boxes under ``by``."""
    x0, y0, x1, y1 = box.bbox
    dx = by if x1 + by <= width else -by
    return BoxObject((x0 + dx, y0, x1 + dx, y1), box.category, box.category_id)


@pytest.fixture(scope="module")
def misplanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, set[str]]:
    """Real demo shards, and a 'generated' set: real val rows whose boxes were moved off their objects in half."""
    tmp = tmp_path_factory.mktemp("curate")
    ingest_demo(tmp, {"train": 32, "val": 16, "test": 4}, rows_per_shard=8)
    real = ShardSet(str(tmp / "canonical"))
    moved: set[str] = set()
    samples = []
    for i, sample in enumerate(real.iter_samples("val")):
        if i % 2 and sample.objects:  # the plan says the objects are elsewhere
            objects = [_moved(o, sample.width / 2, sample.width) for o in sample.objects]
            sample = dataclasses.replace(sample, objects=objects)
            moved.add(sample.id)
        samples.append(sample)
    writer = ShardSetWriter(str(tmp / "synthetic"), real.spec, generated=True, params_hash="test")
    writer.finalize(writer.write_split("val", samples, rows_per_shard=5))
    return tmp, tmp / "synthetic", moved


def _curate_config(tmp: Path, synthetic: Path, labels: str = "plan", **rules: float) -> object:
    return make_config(
        tmp / "raw",
        tmp / "canonical",
        evaluate={
            "real": str(tmp / "canonical"),
            "features": {"dims": 32},
            "detector": {"width": 16},
            "detector_train": LEARNING_DETECTOR_TRAIN,
        },
        curate={
            "synthetic": str(synthetic),
            "split": "val",
            "rules": {"keep_share": 0.5, **rules},
            "labels": {"source": labels},
            "output": str(tmp / "curated"),
            "scores": str(tmp / "reports" / "scores.parquet"),
            "report": str(tmp / "reports" / "curate.json"),
            "detector": str(tmp / "detector_real"),
            "checkpoints": str(tmp / "ckpt"),
        },
    )


def test_curation_keeps_samples_whose_objects_are_where_the_plan_says(misplanned: tuple[Path, Path, set[str]]) -> None:
    tmp, synthetic, moved = misplanned
    result = curate.run(_curate_config(tmp, synthetic), progress=False)
    scores = {s.id: s for s in result.scores}
    intact = [s for s in result.scores if s.id not in moved and s.planned]
    displaced = [scores[i] for i in moved]
    assert np.mean([s.recall for s in intact]) > np.mean([s.recall for s in displaced]) + 0.2
    kept = {s.id for s in result.scores if s.kept}
    assert len(kept & moved) < len(kept - moved)  # most of what is kept follows its layout

    # the curated set: a complete shard set whose rows are the kept source rows, byte for byte
    curated = ShardSet(str(tmp / "curated"))
    out = curated.read_table("val").to_pylist()
    assert {r["id"] for r in out} == kept
    source = {r["id"]: r for r in ShardSet(str(synthetic)).read_table("val").to_pylist()}
    for row in out:
        assert row == source[row["id"]]
    table = pq.read_table(tmp / "reports" / "scores.parquet").to_pylist()
    assert sorted(r["id"] for r in table) == sorted(scores)
    assert all(r["reason"] for r in table)
    report = json.loads((tmp / "reports" / "curate.json").read_text())
    assert report["kept"] == len(kept) and report["box_recall"]["kept"] > report["box_recall"]["all"]
    real_test = report["box_recall_real_test"]  # the same detector on real frames: no box there was moved
    assert set(real_test["per_class"]) == set(curated.spec.classes)
    assert real_test["all"] > report["box_recall"]["all"]
    assert not (tmp / "ckpt").exists()

    # a second run with stricter rules reuses the saved detector (same key) and keeps a subset
    weights = tmp / "detector_real" / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_mtime_ns
    strict = curate.run(_curate_config(tmp, synthetic, min_recall=0.99), progress=False)
    assert weights.stat().st_mtime_ns == before
    assert {s.id for s in strict.scores if s.kept} <= kept | {s.id for s in strict.scores if s.recall is None}
    assert [(s.id, s.recall) for s in strict.scores] == [(s.id, s.recall) for s in result.scores]


def test_curated_rows_carry_the_boxes_the_detector_sees(misplanned: tuple[Path, Path, set[str]]) -> None:
    """With detector or verified labels a displaced plan's boxes give way to the objects' real places."""
    tmp, synthetic, moved = misplanned
    truth = {s.id: s for s in ShardSet(str(tmp / "canonical")).iter_samples("val")}  # the unmoved boxes
    source = {r["id"]: r for r in ShardSet(str(synthetic)).read_table("val").to_pylist()}

    def overlap(objects: list[dict], reference: list[BoxObject]) -> float:
        if not objects or not reference:
            return 0.0
        boxes = np.array([o["bbox"] for o in objects], dtype=float)
        return float(box_iou(boxes, np.array([o.bbox for o in reference], dtype=float)).max(axis=1).mean())

    for labels in ("detector", "verified"):
        result = curate.run(_curate_config(tmp, synthetic, labels=labels, keep_share=1.0), progress=False)
        rows = ShardSet(str(tmp / "curated")).read_table("val").to_pylist()
        assert len(rows) == len(result.scores)
        table = {r["id"]: r for r in pq.read_table(tmp / "reports" / "scores.parquet").to_pylist()}
        for row in rows:  # everything but the boxes byte for byte; the boxes are the ones the scores record
            assert {k: v for k, v in row.items() if k != "objects"} == {
                k: v for k, v in source[row["id"]].items() if k != "objects"
            }
            recorded = table[row["id"]]["boxes"]
            assert [o["category"] for o in row["objects"]] == [b["category"] for b in recorded]
            np.testing.assert_allclose([o["bbox"] for o in row["objects"]], [b["bbox"] for b in recorded], atol=1e-2)
        displaced = [r for r in rows if r["id"] in moved and r["objects"]]
        assert displaced, f"{labels}: no displaced row kept a box"
        to_truth = np.mean([overlap(r["objects"], truth[r["id"]].objects) for r in displaced])
        to_plan = np.mean(
            [overlap(r["objects"], [BoxObject(**o) for o in source[r["id"]]["objects"]]) for r in displaced]
        )
        assert to_truth > to_plan + 0.2, (labels, to_truth, to_plan)
        report = json.loads((tmp / "reports" / "curate.json").read_text())
        assert report["labels"]["source"] == labels and report["labels"]["added"] > 0

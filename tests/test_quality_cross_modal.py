"""Defects no single image shows: misregistered, mirrored, BGR or swapped modalities, boxes off their objects,
duplicate boxes, train/test leakage, captions that contradict their layout. Each planted defect must fail its
own expectation on its own row, and the clean demo scenes (and ../shared/realdata, in test_realdata_gates)
must pass every one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffx.data.demo import write_demo
from diffx.data.images import encode_png
from diffx.data.sample import BoxObject, Sample
from diffx.quality.gate import GateFailed
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages import check, ingest

from .conftest import gate_config as _config
from .conftest import make_config


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Canonical shards of 40 train + 8 test demo scenes at 128 x 96 (the real ingest path)."""
    tmp = tmp_path_factory.mktemp("cross")
    write_demo(str(tmp / "raw"), seed=5, width=128, height=96, splits={"train": 40, "val": 8})
    config = make_config(tmp / "raw", tmp / "canonical")
    ingest.run(config, progress=False)
    return tmp / "canonical"


def _samples(root: Path) -> list[Sample]:
    return list(ShardSet(str(root)).iter_samples())


def _write(samples: list[Sample], root: Path) -> Path:
    from diffx.data.demo import DEMO_SPEC

    writer = ShardSetWriter(str(root), DEMO_SPEC)
    records = []
    for split in sorted({s.split for s in samples}):
        records += writer.write_split(split, [s for s in samples if s.split == split], 16)
    writer.finalize(records)
    return root


def _failures(tmp: Path, gate: str) -> dict[str, dict[str, Any]]:
    report = json.loads((tmp / "reports" / f"{gate}.json").read_text())
    return {f"{f['expectation']}:{f['column']}": f for f in report["failures"]}


def _image(sample: Sample, name: str, array: np.ndarray) -> Sample:
    return dataclasses.replace(sample, images={**sample.images, name: encode_png(array, f"{sample.id}-{name}", 1)})


def _shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved by (dy, dx) px, edges repeated (what a misregistered camera pair looks like)."""
    h, w = array.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return np.ascontiguousarray(array[ys][:, xs])


def _colour_cast(sample: Sample) -> float:
    rgb = sample.images["rgb"].to_array().astype(np.float64)
    return abs(rgb[..., 0].mean() - rgb[..., 2].mean())


def _moved_boxes(sample: Sample, dx: int) -> Sample:
    moved = []
    for o in sample.objects:
        x0, y0, x1, y1 = o.bbox
        step = dx if x1 + dx <= sample.width else -dx
        moved.append(BoxObject((x0 + step, y0, x1 + step, y1), o.category, o.category_id))
    return dataclasses.replace(sample, objects=moved)


def test_clean_scenes_pass_every_cross_modal_expectation(tmp_path: Path, scenes: Path) -> None:
    report = check.run("ingest", _config(tmp_path, scenes))
    assert report.success
    saved = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    judged = {pair for pair, found in saved["reference_registration"].items() if found["judged"]}
    assert {"rgb-thermal", "thermal-depth"} <= judged
    assert saved["reference_box_contrast"]["depth"]["median"] < 0  # near objects in front of the road


# defect -> (plant on one train sample, the expectation that must fail "type:column")
def _defects(train: list[Sample]) -> dict[str, tuple[Sample, Sample, str]]:
    """Each defect with its victim: chosen by what makes the defect visible at all (a scene with no colour
    cast cannot show BGR), deterministically, from disjoint samples."""
    used: set[str] = set()

    def pick(candidates: list[Sample]) -> Sample:
        victim = next(s for s in candidates if s.id not in used)
        used.add(victim.id)
        return victim

    by_cast = sorted(train, key=_colour_cast, reverse=True)
    with_boxes = [s for s in train if len(s.objects) >= 2]
    out: dict[str, tuple[Sample, Sample, str]] = {}
    v = pick(by_cast)
    rgb = v.images["rgb"].to_array()
    out["RGB stored as BGR"] = (v, _image(v, "rgb", np.ascontiguousarray(rgb[..., ::-1])), "between:rgb_colour_outlier")
    v = pick(train)
    out["thermal shifted 8 px"] = (
        v,
        _image(v, "thermal", _shifted(v.images["thermal"].to_array(), 0, 8)),
        "between:thermal_misregistration_px",
    )
    v = pick(train)
    out["depth shifted 8 px"] = (
        v,
        _image(v, "depth", _shifted(v.images["depth"].to_array(), 8, 0)),
        "between:thermal_depth_misregistration_px",
    )
    v = pick(with_boxes)
    out["RGB mirrored, thermal and depth not"] = (
        v,
        _image(v, "rgb", np.ascontiguousarray(v.images["rgb"].to_array()[:, ::-1])),
        "between:thermal_mirror_gain",
    )
    v = pick(train)
    depth = v.images["depth"].to_array().astype(np.float64)
    as_8bit = np.round(255 * (depth - depth.min()) / max(np.ptp(depth), 1)).astype(np.uint8)
    out["thermal replaced by the depth image"] = (v, _image(v, "thermal", as_8bit), "between:thermal_depth_rank_corr")
    v = pick(with_boxes)
    out["boxes moved 40 px off their objects"] = (v, _moved_boxes(v, 40), "between:box_content")
    v = pick(with_boxes)
    first = v.objects[0]
    x0, y0, x1, y1 = first.bbox
    twin = BoxObject((x0 + 0.25, y0, x1, y1 - 0.25), first.category, first.category_id)
    out["one object labelled twice"] = (
        v,
        dataclasses.replace(v, objects=[*v.objects, twin]),
        "between:duplicate_boxes",
    )
    return out


def test_each_cross_modal_defect_fails_its_expectation_on_its_row(tmp_path: Path, scenes: Path) -> None:
    samples = _samples(scenes)
    train = [s for s in samples if s.split == "train"]
    planted = _defects(train)
    for victim, bad, _ in planted.values():
        samples[samples.index(victim)] = bad
    leak_source = next(s for s in samples if s.split == "val")
    rng = np.random.default_rng(0)
    noisy = np.clip(leak_source.images["rgb"].to_array() + rng.integers(-3, 4, (96, 128, 3)), 0, 255).astype(np.uint8)
    leaked = dataclasses.replace(_image(leak_source, "rgb", noisy), id="leaked-val-copy", split="train")
    samples.append(leaked)  # a validation scene re-encoded into train: not byte-identical, still leakage
    bad_set = _write(samples, tmp_path / "bad")
    with pytest.raises(GateFailed):
        check.run("ingest", _config(tmp_path, bad_set))
    failures = _failures(tmp_path, "ingest")
    for name, (victim, _, key) in planted.items():
        full = f"expect_column_values_to_be_{key}"
        assert full in failures, f"{name}: {full} did not fail; failures: {sorted(failures)}"
        assert victim.id in {r["id"] for r in failures[full]["rows"]}, f"{name}: {victim.id} not named"
    twins = failures["expect_column_values_to_be_null:cross_split_twin"]["rows"]
    assert {r["id"]: r["observed"] for r in twins}["leaked-val-copy"] == leak_source.id


def test_a_whole_set_shifted_is_caught_not_learnt_as_normal(tmp_path: Path, scenes: Path) -> None:
    samples = [_image(s, "thermal", _shifted(s.images["thermal"].to_array(), 0, 8)) for s in _samples(scenes)]
    with pytest.raises(GateFailed):
        check.run("ingest", _config(tmp_path, _write(samples, tmp_path / "shifted")))
    failed = _failures(tmp_path, "ingest")["expect_column_values_to_be_between:thermal_misregistration_px"]
    assert failed["unexpected_count"] >= len(samples) // 2  # not absorbed as the set's normal offset


def _captioned(root: Path) -> list[Sample]:
    """Template captions, as the caption stage writes them offline."""
    from diffx.caption.template import TemplateCaptioner
    from diffx.data.demo import DEMO_SPEC

    captioner = TemplateCaptioner(DEMO_SPEC)
    return [dataclasses.replace(s, caption=captioner.caption(s), caption_source="template") for s in _samples(root)]


def test_captions_that_contradict_their_layout_or_are_garbage_fail(tmp_path: Path, scenes: Path) -> None:
    samples = _captioned(scenes)
    config = _config(tmp_path, scenes)
    assert check.run("captions", config, str(_write(samples, tmp_path / "good"))).success

    def counts(s: Sample) -> dict[str, int]:
        return {c: sum(o.category == c for o in s.objects) for c in ("person", "bicycle", "car")}

    no_car = next(s for s in samples if counts(s)["car"] == 0)
    two_people = next(s for s in samples if counts(s)["person"] == 2 and s.id != no_car.id)
    other = next(s for s in samples if s.id not in {no_car.id, two_people.id} and counts(s) != counts(samples[-1]))
    garbage = next(s for s in samples if s.id not in {no_car.id, two_people.id, other.id, samples[-1].id})
    planted = {
        no_car.id: no_car.caption + " A red car is parked nearby.",  # a class the layout lacks
        two_people.id: two_people.caption.replace("two people", "five people"),  # a wrong count
        other.id: samples[-1].caption,  # another sample's caption
        garbage.id: "Xkqz vbnm plorf trazzle wemb qoxx zzyv.",  # garbage text
    }
    assert planted[two_people.id] != two_people.caption
    bad = [dataclasses.replace(s, caption=planted.get(s.id, s.caption)) for s in samples]
    with pytest.raises(GateFailed):
        check.run("captions", config, str(_write(bad, tmp_path / "bad")))
    failures = _failures(tmp_path, "captions")
    conflicts = {r["id"] for r in failures["expect_column_values_to_be_between:layout_conflicts"]["rows"]}
    assert {no_car.id, two_people.id, other.id} <= conflicts
    garbled = failures["expect_column_values_to_be_between:tokens_per_word"]["rows"]
    assert [r["id"] for r in garbled] == [garbage.id]


def test_unresolved_refine_flags_above_their_share_fail_the_captions_gate(tmp_path: Path, scenes: Path) -> None:
    samples = _captioned(scenes)
    good = _write(samples, tmp_path / "good")
    queue = tmp_path / "queue.jsonl"
    item = {"split": "train", "caption": "x", "caption_source": "template", "reviewed": "d", "flags": ["f"]}
    queue.write_text("".join(json.dumps({"id": s.id, **item}) + "\n" for s in samples[:2]))
    assert check.run("captions", _config(tmp_path, scenes), str(good)).success  # 2 of 48: under 5%
    queue.write_text("".join(json.dumps({"id": s.id, **item}) + "\n" for s in samples[:10]))
    with pytest.raises(GateFailed, match="pending_share"):
        check.run("captions", _config(tmp_path, scenes), str(good))


def test_a_coincidence_between_two_modalities_is_overruled_by_the_reference() -> None:
    """A near car fills the frame: depth's roof line meets thermal's window tops 5 px lower, so thermal vs depth
    alone peaks at a shift, while RGB places both where they are. The pair is judged through RGB; a real shift of
    depth is still found."""
    from diffx.config import ImageGateConfig
    from diffx.data.demo import DEMO_SPEC, render_scene, sample_rng
    from diffx.quality import consistency
    from diffx.quality.stats import _cross_modal

    scene = render_scene(sample_rng(0, "test", 100), 160, 128, (4.0, 10.0))
    decoded = {"rgb": scene.rgb, "thermal": scene.thermal, "depth": scene.depth}
    direct = consistency.registration(scene.thermal.astype(float), scene.depth.astype(float), 1, 0.1)
    assert direct["misregistration_px"] >= 4  # the coincidence this guards against
    cfg = ImageGateConfig()
    found, _ = _cross_modal(DEMO_SPEC, decoded, [], 160, 128, cfg)
    assert found["thermal_depth_misregistration_px"] <= cfg.max_misregistration_px
    shifted, _ = _cross_modal(DEMO_SPEC, {**decoded, "depth": _shifted(scene.depth, 8, 0)}, [], 160, 128, cfg)
    assert shifted["thermal_depth_misregistration_px"] > cfg.max_misregistration_px

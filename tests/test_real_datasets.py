"""Real datasets as users bring them: KAIST, per-modality file names and channel rules, colliding base names,
COCO variants, parallel ingest, the dry run, and error messages that name the source file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffx.config import CocoFoldersSource, KaistSource, VocPairsSource, parse_config
from diffx.data.readers.kaist import parse_bbgt
from diffx.data.readers.options import PickChannel, sample_ids
from diffx.data.sample import Rejected, Sample
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.errors import ConfigError, DataError
from diffx.shards.manifest import read_manifest
from diffx.stages.ingest import ingest
from diffx.stages.survey import survey

from .conftest import KAIST_SIZE, make_config, read_validated

RT = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=("person",),
)
RNG = np.random.default_rng(7)
W, H = KAIST_SIZE


def _read(source, spec=RT, channels=None) -> tuple[list[Sample], list[Rejected]]:
    return read_validated(source, spec, channels)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def _kaist(root: Path, **kw) -> KaistSource:
    defaults = {"root": str(root), "category_map": {"cyclist": "person"}, "drop_ignored": True}
    return KaistSource(**{**defaults, **kw})


def test_kaist_lwir_is_refused_strictly_and_read_with_a_channel_rule(kaist_root: Path) -> None:
    samples, rejected = _read(_kaist(kaist_root))
    assert not samples and len(rejected) == 4
    assert "3 channels that differ" in rejected[0].reason and "ingest.source.channels.thermal" in rejected[0].reason
    assert rejected[0].files and rejected[0].files[0].endswith("lwir/I00000.jpg")
    for rule in ("mean", PickChannel(pick=0)):
        samples, rejected = _read(_kaist(kaist_root), channels={"thermal": rule})
        assert not rejected and len(samples) == 4
        assert samples[0].images["thermal"].mode == "L"


def test_kaist_ids_splits_boxes(kaist_root: Path) -> None:
    samples, _ = _read(
        _kaist(kaist_root, splits={"train": "imageSets/train.txt", "test": "imageSets/test.txt"}),
        channels={"thermal": "mean"},
    )
    assert [(s.id, s.split) for s in samples] == [
        ("set00/V000/I00000", "train"),
        ("set00/V000/I00001", "train"),
        ("set00/V001/I00000", "train"),
        ("set00/V001/I00001", "test"),
    ]
    first = samples[0]
    assert [o.bbox for o in first.objects] == [(10.0, 5.0, 22.0, 35.0), (50.0, 10.0, 64.0, 40.0)]  # clipped
    assert first.annotation and first.annotation.endswith("annotations/set00/V000/I00000.txt")
    thermal = first.images["thermal"].to_array()
    raw = np.asarray(Image.open(kaist_root / "images/set00/V000/lwir/I00000.jpg")).astype(np.float32)
    assert np.array_equal(thermal, np.rint(raw.mean(axis=2)).astype(np.uint8))


def test_kaist_unmapped_label_and_bad_line_name_the_file(kaist_root: Path) -> None:
    _, rejected = _read(_kaist(kaist_root, category_map={}), channels={"thermal": "mean"})
    assert len(rejected) == 2 and "unknown class 'cyclist'" in rejected[0].reason
    assert "annotations/set00/V000/I00000.txt" in rejected[0].reason
    bad = kaist_root / "annotations/set00/V000/I00001.txt"
    bad.write_text("% bbGt version=3\nperson 1 2 three 4 0 0 0 0 0 0 0\n")
    with pytest.raises(DataError, match=r"I00001.txt:2: x y w h"):
        parse_bbgt(str(bad), drop_ignored=False)


def test_box_outside_the_image_names_the_annotation_file(kaist_root: Path) -> None:
    _, rejected = _read(_kaist(kaist_root, clip_boxes=False), channels={"thermal": "mean"})
    reasons = {r.id: r for r in rejected}
    outside = reasons["set00/V000/I00000"]
    assert (
        "annotations/set00/V000/I00000.txt: objects[1].bbox" in outside.reason and "outside the 64x48" in outside.reason
    )
    assert outside.files[0].endswith("I00000.txt") and any(f.endswith("visible/I00000.jpg") for f in outside.files)


def test_insanet_style_coco_json_with_im_name_and_colliding_stems(kaist_root: Path) -> None:
    """INSANet's KAIST JSON: 'im_name' without extension, frames named per video; per-modality templates."""
    images = [
        {"id": i, "im_name": name, "width": W, "height": H}
        for i, name in enumerate(["set00/V000/I00000", "set00/V001/I00000"])
    ]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 12, 30]}]
    (kaist_root / "coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]})
    )
    source = CocoFoldersSource(
        root=str(kaist_root),
        modalities={"rgb": "images", "thermal": "images"},
        annotations={"train": "coco.json"},
        filename_template={"rgb": "{dir}/visible/{stem}.jpg", "thermal": "{dir}/lwir/{stem}.jpg"},
        channels={"thermal": "mean"},
    )
    with pytest.raises(DataError, match=r"needs a 'file_name' string .*'im_name'.*file_name_key"):
        _read(source, channels={"thermal": "mean"})
    samples, rejected = _read(source.model_copy(update={"file_name_key": "im_name"}), channels={"thermal": "mean"})
    assert not rejected and [s.id for s in samples] == ["set00/V000/I00000", "set00/V001/I00000"]
    assert len(samples[1].objects) == 1 and not samples[0].objects
    with pytest.raises(ValueError, match="unknown field"):
        CocoFoldersSource(root=".", modalities={}, annotations={}, filename_template="{id}.png")


def test_sample_ids_fall_back_to_paths_only_on_collision() -> None:
    assert sample_ids(["a/x.jpg", "b/y.jpg"]) == ["x", "y"]
    assert sample_ids(["a/x.jpg", "b/x.jpg"]) == ["a/x", "b/x"]
    assert sample_ids(["./a/x.jpg", "b/y.jpg"], "path") == ["a/x", "b/y"]


def test_voc_pairs_per_modality_file_names(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    for sid in ("p1", "p2"):
        _save(tmp_path / "pairs" / f"{sid}_visible.png", RNG.integers(0, 255, (H, W, 3), np.uint8))
        _save(tmp_path / "pairs" / f"{sid}_lwir.png", RNG.integers(0, 255, (H, W), np.uint8))
        (tmp_path / "Annotations" / f"{sid}.xml").write_text(
            "<annotation><object><name>person</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
            "<ymax>20</ymax></bndbox></object></annotation>"
        )
    source = VocPairsSource(
        root=str(tmp_path),
        modalities={"rgb": "pairs", "thermal": "pairs"},
        filename_template={"rgb": "{id}_visible.png", "thermal": "{id}_lwir.png"},
    )
    samples, rejected = _read(source)
    assert not rejected and [s.id for s in samples] == ["p1", "p2"]
    assert samples[0].images["thermal"].path.endswith("p1_lwir.png")


def _kaist_config(root: Path, tmp_path: Path, **source: Any):
    """The whole configuration for a KAIST source, outputs under ``tmp_path``, validated as params are."""
    return parse_config(
        {
            "data": {
                "modalities": [{"name": "rgb", "channels": 3}, {"name": "thermal", "channels": 1}],
                "classes": ["person"],
            },
            "ingest": {
                "source": {"format": "kaist", "root": str(root), **source},
                "output": str(tmp_path / "out"),
                "report": str(tmp_path / "r.json"),
                "metrics": str(tmp_path / "m.json"),
            },
        }
    )


def test_channel_rules_are_checked_against_the_modalities(kaist_root: Path, tmp_path: Path) -> None:
    for channels, message in (
        ({"lwir": "mean"}, "ingest.source.channels.lwir: not a modality"),
        ({"rgb": "mean"}, "1-channel modalities only"),
    ):
        config = _kaist_config(kaist_root, tmp_path, channels=channels)
        with pytest.raises(ConfigError, match=message):
            ingest(config.data, config.ingest, config.shards, progress=False)


def test_two_workers_write_the_same_bytes_as_one(demo_root: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(demo_root, raw)
    victim = raw / "thermal" / "demo-train-00003.png"
    victim.write_bytes(victim.read_bytes()[:100])  # a quarantined sample keeps its place in the report too
    reports = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        config = make_config(
            raw,
            out,
            **{"ingest.workers": workers, "ingest.max_quarantine_fraction": 0.2, "ingest.report": str(out) + ".json"},
        )
        ingest(config.data, config.ingest, config.shards, progress=False)
        reports.append(json.loads(Path(str(out) + ".json").read_text()))
    one, two = (read_manifest(str(tmp_path / f"w{w}")) for w in (1, 2))
    assert [(s.path, s.sha256) for s in one.shards] == [(s.path, s.sha256) for s in two.shards]
    assert reports[0]["quarantine"] == reports[1]["quarantine"] and reports[0]["quarantined"] == 1
    assert reports[0]["quarantine"][0]["files"][0].endswith("demo-train-00003.png")


def test_dry_run_reports_and_writes_nothing(kaist_root: Path, tmp_path: Path) -> None:
    stray = kaist_root / "images" / "set00" / "V000" / "visible" / "I00099.jpg"  # no lwir partner, no annotation
    _save(stray, RNG.integers(0, 255, (H, W, 3), np.uint8))
    config = _kaist_config(
        kaist_root,
        tmp_path,
        splits={"train": "imageSets/train.txt"},
        channels={"thermal": "mean"},
        ignore_categories=["cyclist", "person?"],
    )
    report = survey(config.data, config.ingest, config.shards)
    assert report["samples_by_split"] == {"train": 3} and report["boxes_by_class"] == {"person": 2}
    assert report["frame_sizes"] == {"64x48": 3} and report["samples_without_boxes"] == 1
    assert report["unmatched_image_files"] == 3  # the test-split pair and the stray frame
    assert "set00/V000/visible/I00099.jpg" in {p.replace("images/", "", 1) for p in report["unmatched_examples"]}
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.json").exists()

"""Every reader on small fixtures written here, including each malformed-input case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffx.config import (
    CocoFoldersSource,
    Come15kSource,
    DiffxFolderSource,
    FlirSource,
    MfnetSource,
    SunRgbdSource,
    VocPairsSource,
)
from diffx.data.sample import Rejected, Sample
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.errors import ConfigError, DataError

from .conftest import read_validated

RT = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=("person", "bicycle", "car"),
)
RD = DatasetSpec(
    modalities=(
        ModalitySpec(name="rgb", channels=3),
        ModalitySpec(name="depth", channels=1, bit_depth=16, units="mm", scale=0.001),
    ),
    classes=("foreground",),
    layout_kind="saliency",
)
RNG = np.random.default_rng(0)


def _img(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _rgb(h=24, w=32):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _grey(h=24, w=32):
    return RNG.integers(0, 255, (h, w), dtype=np.uint8)


def _read(source, spec=RT) -> tuple[list[Sample], list[Rejected]]:
    return read_validated(source, spec)


# ----------------------------------------------------------------------------- coco_folders
def _coco(path: Path, images, annotations, categories=("person", "bicycle", "car")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i + 1, "name": c} for i, c in enumerate(categories)],
            }
        )
    )


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    for sid in ("a", "b", "c"):
        _img(tmp_path / "vis" / f"{sid}.png", _rgb())
        _img(tmp_path / "ir" / f"{sid}.png", _grey())
    _coco(
        tmp_path / "ann" / "train.json",
        [{"id": i, "file_name": f"{s}.png"} for i, s in enumerate("abc", 1)],
        [
            {"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5]},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 20]},
        ],
    )
    return tmp_path


def _coco_source(root: Path, **kw) -> CocoFoldersSource:
    return CocoFoldersSource(
        root=str(root), modalities={"rgb": "vis", "thermal": "ir"}, annotations={"train": "ann/train.json"}, **kw
    )


def test_coco_folders_reads_and_converts_boxes(coco_root: Path) -> None:
    samples, rejected = _read(_coco_source(coco_root))
    assert not rejected
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert samples[0].objects[0].bbox == (1.0, 2.0, 11.0, 7.0) and samples[0].objects[0].category == "car"
    assert samples[2].objects == []


def test_missing_modality_file_rejects_that_sample_only(coco_root: Path) -> None:
    (coco_root / "ir" / "b.png").unlink()
    samples, rejected = _read(_coco_source(coco_root))
    assert [s.id for s in samples] == ["a", "c"]
    assert rejected[0].id == "b" and "ir/b.png: file not found" in rejected[0].reason


def test_modality_sizes_that_differ_are_rejected(coco_root: Path) -> None:
    _img(coco_root / "ir" / "a.png", _grey(20, 32))
    _, rejected = _read(_coco_source(coco_root))
    assert rejected[0].id == "a" and "thermal: size 32x20 differs" in rejected[0].reason


def test_unknown_class_is_rejected_unless_mapped_or_ignored(coco_root: Path) -> None:
    _coco(
        coco_root / "ann" / "train.json",
        [{"id": 1, "file_name": "a.png"}],
        [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]}],
        categories=("tram",),
    )
    _, rejected = _read(_coco_source(coco_root))
    assert "unknown class 'tram'" in rejected[0].reason
    samples, rejected = _read(_coco_source(coco_root, category_map={"tram": "car"}))
    assert not rejected and samples[0].objects[0].category == "car"
    samples, rejected = _read(_coco_source(coco_root, ignore_categories=["tram"]))
    assert not rejected and samples[0].objects == []


def test_malformed_coco_json_names_line(coco_root: Path) -> None:
    (coco_root / "ann" / "train.json").write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DataError, match=r"train\.json:2: not valid JSON"):
        _read(_coco_source(coco_root))


def test_coco_annotation_pointing_nowhere_names_field(coco_root: Path) -> None:
    _coco(
        coco_root / "ann" / "train.json",
        [{"id": 1, "file_name": "a.png"}],
        [{"image_id": 9, "category_id": 1, "bbox": [1, 1, 3, 3]}],
    )
    with pytest.raises(DataError, match=r"\[annotations\[0\]\]: image_id 9 is not in 'images'"):
        _read(_coco_source(coco_root))


# ----------------------------------------------------------------------------- voc_pairs
def _voc(path: Path, size, objects) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.write_text(
        f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>1</depth>"
        f"</size>{objs}</annotation>"
    )


def test_voc_pairs_one_based_boxes_and_size_check(tmp_path: Path) -> None:
    for sid in ("010001", "010002"):
        _img(tmp_path / "visible" / "train" / f"{sid}.png", _rgb())
        _img(tmp_path / "infrared" / "train" / f"{sid}.png", np.stack([_grey()] * 3, -1))  # grey in 3 channels
    _voc(tmp_path / "Annotations" / "010001.xml", (32, 24), [("person", (1, 1, 10, 20))])
    _voc(tmp_path / "Annotations" / "010002.xml", (640, 480), [])
    source = VocPairsSource(
        root=str(tmp_path), modalities={"rgb": "visible/{split}", "thermal": "infrared/{split}"}, extension=".png"
    )
    samples, rejected = _read(source)
    assert [s.id for s in samples] == ["010001"]
    assert samples[0].objects[0].bbox == (0.0, 0.0, 10.0, 20.0)
    assert samples[0].images["thermal"].mode == "L"
    assert rejected[0].id == "010002" and "010002.xml [size]: <size> says 640x480" in rejected[0].reason


def test_voc_bad_xml_names_line(tmp_path: Path) -> None:
    _img(tmp_path / "v" / "x.png", _rgb())
    _img(tmp_path / "i" / "x.png", _grey())
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text("<annotation>\n<object>\n</annotation>")
    source = VocPairsSource(root=str(tmp_path), modalities={"rgb": "v", "thermal": "i"}, extension=".png")
    _, rejected = _read(source)
    assert "x.xml:3: not valid XML" in rejected[0].reason


# ----------------------------------------------------------------------------- diffx_folder
@pytest.fixture
def diffx_root(tmp_path: Path) -> Path:
    (tmp_path / "Main").mkdir()
    (tmp_path / "Main" / "train.txt").write_text("FLIR_1\nFLIR_2\n")
    (tmp_path / "Main" / "val.txt").write_text("FLIR_3\n")
    for sid in ("FLIR_1", "FLIR_2", "FLIR_3"):
        _img(tmp_path / "JPEGImages_RGB" / f"{sid}.jpg", _rgb(), "JPEG")
        _img(tmp_path / "JPEGImages_T" / f"{sid}.jpg", _grey(), "JPEG")
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{sid}.txt").write_text("2 0.5 0.5 0.25 0.5\n0 0.125 0.5 0.125 0.5\n")
        _img(tmp_path / "sobel" / f"{sid}.png", _grey())
    (tmp_path / "caption").mkdir()
    (tmp_path / "caption" / "FLIR_1.txt").write_text("An image of a car on a road at night.\n")
    return tmp_path


def _diffx_source(root: Path, **kw) -> DiffxFolderSource:
    return DiffxFolderSource(root=str(root), modalities={"rgb": "RGB", "thermal": "T"}, **kw)


def test_diffx_folder_yolo_captions_and_sobel(diffx_root: Path) -> None:
    spec = RT.model_copy(update={"layout_kind": "edges"})
    samples, rejected = _read(_diffx_source(diffx_root, layout="sobel"), spec)
    assert not rejected and [s.split for s in samples] == ["train", "train", "val"]
    first = samples[0]
    assert first.objects[0].category == "car" and first.objects[0].bbox == (12.0, 6.0, 20.0, 18.0)
    assert first.caption == "An image of a car on a road at night." and first.caption_source == "human"
    assert samples[1].caption is None and first.layout is not None and first.layout.mode == "L"


def test_bad_yolo_line_names_file_and_line(diffx_root: Path) -> None:
    (diffx_root / "labels" / "FLIR_2.txt").write_text("2 0.5 0.5 0.25 0.5\n7 0.5 0.5 0.1 0.1\n")
    (diffx_root / "labels" / "FLIR_3.txt").write_text("car 0.5 0.5 0.1\n")
    _, rejected = _read(_diffx_source(diffx_root))
    reasons = {r.id: r.reason for r in rejected}
    assert "FLIR_2.txt:2: class id 7 outside 0..2" in reasons["FLIR_2"]
    assert "FLIR_3.txt:1: expected 'class cx cy w h'" in reasons["FLIR_3"]


def test_empty_split_file_is_an_error(diffx_root: Path) -> None:
    (diffx_root / "Main" / "val.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"val\.txt: split file is empty"):
        _read(_diffx_source(diffx_root))


def test_diffx_folder_label_png_to_boxes(diffx_root: Path) -> None:
    labels = np.zeros((24, 32), np.uint8)
    labels[2:10, 3:9] = 1  # car
    labels[12:20, 20:22] = 2  # person
    for sid in ("FLIR_1", "FLIR_2", "FLIR_3"):
        _img(diffx_root / "labels" / f"{sid}.png", labels)
    source = _diffx_source(
        diffx_root,
        labels="label_png",
        label_classes=["unlabeled", "car", "person"],
        box_classes=["car", "person"],
        category_map={},
        min_component_pixels=4,
    )
    samples, rejected = _read(source)
    assert not rejected
    assert [(o.category, o.bbox) for o in samples[0].objects] == [
        ("car", (3.0, 2.0, 9.0, 10.0)),
        ("person", (20.0, 12.0, 22.0, 20.0)),
    ]


# ----------------------------------------------------------------------------- mfnet
def test_mfnet_splits_channels_and_derives_boxes(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 255, (24, 32, 4), dtype=np.uint8)
    _img(tmp_path / "images" / "00001D.png", rgba)
    _img(tmp_path / "images" / "00002N.png", _rgb())  # 3 channels: thermal plane missing
    labels = np.zeros((24, 32), np.uint8)
    labels[4:12, 4:12] = 1  # car
    labels[14:22, 20:24] = 3  # bike
    _img(tmp_path / "labels" / "00001D.png", labels)
    _img(tmp_path / "labels" / "00002N.png", labels)
    (tmp_path / "train.txt").write_text("00001D\n00002N\n")
    samples, rejected = _read(MfnetSource(root=str(tmp_path), splits=["train"]))
    assert [s.id for s in samples] == ["00001D"]
    np.testing.assert_array_equal(samples[0].images["thermal"].to_array(), rgba[..., 3])
    np.testing.assert_array_equal(samples[0].images["rgb"].to_array(), rgba[..., :3])
    assert sorted((o.category, o.bbox) for o in samples[0].objects) == [
        ("bicycle", (20.0, 14.0, 24.0, 22.0)),
        ("car", (4.0, 4.0, 12.0, 12.0)),
    ]
    assert "expected a 4-channel PNG" in rejected[0].reason


# ----------------------------------------------------------------------------- flir
@pytest.fixture
def flir_root(tmp_path: Path) -> Path:
    therm = tmp_path / "video_thermal_test"
    rgb = tmp_path / "video_rgb_test"
    for i in (1, 2):
        _img(therm / "data" / f"video-x-frame-00000{i}-t.jpg", _grey(24, 32), "JPEG")
        _img(rgb / "data" / f"video-x-frame-00000{i}-c.jpg", _rgb(60, 80), "JPEG")
    _coco(
        therm / "coco.json",
        [{"id": i, "file_name": f"data/video-x-frame-00000{i}-t.jpg"} for i in (1, 2)],
        [{"image_id": 1, "category_id": 2, "bbox": [2, 2, 5, 5]}],
        categories=("person", "bike"),
    )
    (tmp_path / "rgb_to_thermal_vid_map.json").write_text(
        json.dumps({"video-x-frame-000001-c.jpg": "video-x-frame-000001-t.jpg"})
    )
    return tmp_path


def test_flir_pairs_and_aligns_explicitly(flir_root: Path) -> None:
    samples, rejected = _read(FlirSource(root=str(flir_root), rgb_crop=(8, 6, 72, 54)))
    assert [s.id for s in samples] == ["video-x-frame-000001-t"]
    assert samples[0].images["rgb"].size == (32, 24) and samples[0].objects[0].category == "bicycle"
    assert "no RGB frame paired" in rejected[0].reason


def test_flir_refuses_implicit_alignment(flir_root: Path) -> None:
    with pytest.raises(ConfigError, match="rgb_crop"):
        _read(FlirSource(root=str(flir_root)))
    thermal_only = DatasetSpec(modalities=(ModalitySpec(name="thermal", channels=1),), classes=RT.classes)
    samples, rejected = _read(FlirSource(root=str(flir_root), pairing="thermal_only"), thermal_only)
    assert len(samples) == 2 and not rejected


# ----------------------------------------------------------------------------- come15k
def test_come15k_rgb_depth_saliency(tmp_path: Path) -> None:
    _img(tmp_path / "train/imgs_right/1.jpg", _rgb(), "JPEG")
    _img(tmp_path / "train/depths/1.png", RNG.integers(0, 65535, (24, 32), dtype=np.uint16))
    sal = np.zeros((24, 32), np.uint8)
    sal[5:15, 5:15] = 255
    _img(tmp_path / "train/gt_right/1.png", sal)
    _coco(
        tmp_path / "annotations/COME15K-Train.json",
        [{"id": 7, "file_name": "1.jpg"}],
        [{"image_id": 7, "category_id": 1, "bbox": [5, 5, 10, 10]}],
        categories=("foreground",),
    )
    samples, rejected = _read(Come15kSource(root=str(tmp_path)), RD)
    assert not rejected
    assert samples[0].layout is not None and samples[0].objects[0].bbox == (5.0, 5.0, 15.0, 15.0)
    np.testing.assert_array_equal(samples[0].layout.to_array(), sal)


# ----------------------------------------------------------------------------- sunrgbd
def test_sunrgbd_depth_bits_are_decoded(tmp_path: Path) -> None:
    mm = RNG.integers(500, 8000, (24, 32), dtype=np.uint16)
    stored = ((mm.astype(np.uint32) << 3) | (mm.astype(np.uint32) >> 13)).astype(np.uint16)
    _img(tmp_path / "train/color/0001.png", _rgb(), "JPEG")  # JPEG bytes behind a .png name, as published
    _img(tmp_path / "train_depth/000001.png", stored)
    (tmp_path / "label").mkdir()
    (tmp_path / "label/000001.txt").write_text("foreground 1 2 40 5 0 0 0 1 1 1 1 0\n")
    source = SunRgbdSource(
        root=str(tmp_path), splits={"train": {"rgb": "train/color", "depth": "train_depth"}}, labels="label"
    )
    spec = RD.model_copy(update={"layout_kind": None})
    samples, rejected = _read(source, spec)
    assert not rejected
    np.testing.assert_array_equal(samples[0].images["depth"].to_array(), mm)
    assert samples[0].objects[0].bbox == (1.0, 2.0, 32.0, 7.0)  # clipped to the frame

"""Readers on the real samples in ../shared/realdata (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffx.config import CocoFoldersSource, MfnetSource, SunRgbdSource, VocPairsSource
from diffx.data.readers.base import parse_yolo
from diffx.data.spec import DatasetSpec, ModalitySpec

from .conftest import read_validated

RT = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=("person", "bicycle", "car"),
)


def _read(source, spec):
    return read_validated(source, spec)


def test_llvip_voc_pairs(realdata) -> None:
    source = VocPairsSource(
        root=str(realdata / "llvip"), modalities={"rgb": "visible/{split}", "thermal": "infrared/{split}"}
    )
    samples, rejected = _read(source, RT)
    assert not rejected and len(samples) == 30
    assert sum(len(s.objects) for s in samples) == 125
    assert all(s.size == (1280, 1024) for s in samples[0].images.values())
    first = samples[0]
    assert first.id == "010001" and first.images["thermal"].mode == "L"


def test_m3fd_coco_subset(realdata) -> None:
    source = CocoFoldersSource(
        root=str(realdata / "m3fd"),
        modalities={"rgb": "vi", "thermal": "ir"},
        annotations={"train": "annotations/m3fd-train_subset_00471.json"},
        filename_template="M3FD_{file_name}",
        category_map={"People": "person", "Car": "car"},
        ignore_categories=["Lamp", "Bus", "Truck", "Motorcycle"],
    )
    samples, rejected = _read(source, RT)
    assert not rejected and len(samples) == 1
    assert [o.category for o in samples[0].objects] == ["car"] * 7  # the Lamp box is ignored, not lost silently
    assert samples[0].objects[0].bbox == (0.0, 379.0, 350.0, 578.0)


def test_mfnet_real_four_channel_png(realdata) -> None:
    samples, rejected = _read(MfnetSource(root=str(realdata / "mfnet"), splits=[], labels=False), RT)
    assert not rejected and sorted(s.id for s in samples) == ["01234N", "01477D"]
    raw = np.asarray(Image.open(realdata / "mfnet" / "images" / "01477D.png"))
    day = next(s for s in samples if s.id == "01477D")
    np.testing.assert_array_equal(day.images["thermal"].to_array(), raw[..., 3])


def test_sunrgbd_depth_and_votenet_boxes(realdata) -> None:
    spec = DatasetSpec(
        modalities=(
            ModalitySpec(name="rgb", channels=3),
            ModalitySpec(name="depth", channels=1, bit_depth=16, units="mm", scale=0.001),
        ),
        classes=("bed", "night_stand", "dresser", "lamp", "ottoman", "dresser_mirror"),
    )
    source = SunRgbdSource(
        root=str(realdata / "sunrgbd"),
        labels="votenet_fixture/label",
        ignore_categories=["chair", "table", "sofa", "desk", "bookshelf", "pillow"],
    )
    samples, rejected = _read(source, spec)
    assert not rejected and len(samples) == 30
    first = next(s for s in samples if s.id == "train-0001")
    metres = first.images["depth"].to_array() / 1000.0
    assert 1.0 < metres.min() < 1.4 and 7.5 < metres.max() < 8.5  # README: 1.19-8.03 m after decoding
    assert first.objects[0].category == "bed" and first.objects[0].bbox == (328.0, 152.0, 674.0, 472.0)


def test_msrs_yolo_labels(realdata) -> None:
    classes = (realdata / "msrs_labels" / "classes.txt").read_text().split()
    names = [c for c in classes if not c.isdigit()]
    boxes = parse_yolo(str(realdata / "msrs_labels" / "infrared" / "train" / "00556D.txt"), 640, 480, names)
    assert [n for n, _ in boxes] == ["car", "car", "person", "person", "person", "person"]
    x0, y0, x1, y1 = boxes[0][1]
    assert abs((x0 + x1) / 2 - 0.834375 * 640) < 1e-3 and abs((y1 - y0) - 0.127083 * 480) < 1e-3


REAL_SETS = {
    "llvip": (
        {"format": "voc_pairs", "modalities": {"rgb": "visible/{split}", "thermal": "infrared/{split}"}},
        RT,
    ),
    "mfnet": ({"format": "mfnet", "splits": [], "labels": False}, RT),
    "sunrgbd": (
        {
            "format": "sunrgbd",
            "labels": "votenet_fixture/label",
            "ignore_categories": ["chair", "table", "sofa", "desk", "bookshelf", "pillow"],
        },
        DatasetSpec(
            modalities=(
                ModalitySpec(name="rgb", channels=3),
                ModalitySpec(name="depth", channels=1, bit_depth=16, units="mm", scale=0.001),
            ),
            classes=("bed", "night_stand", "dresser", "lamp", "ottoman", "dresser_mirror"),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_the_ingest_gate_raises_no_false_alarm_on_real_samples(realdata, tmp_path: Path, name: str) -> None:
    """Every expectation, the cross-modal ones included, passes real registered data as its users bring it."""
    from diffx.config import parse_config
    from diffx.stages import check, ingest

    source, spec = REAL_SETS[name]
    config = parse_config(
        {
            "data": {"modalities": [m.model_dump() for m in spec.modalities], "classes": list(spec.classes)},
            "ingest": {
                "source": {**source, "root": str(realdata / name)},
                "output": str(tmp_path / "canonical"),
                "report": str(tmp_path / "ingest.json"),
                "metrics": str(tmp_path / "ingest-metrics.json"),
            },
            "quality": {"reports": str(tmp_path / "q"), "metrics": str(tmp_path / "qm"), "docs": None},
        }
    )
    ingest.run(config, progress=False)
    report = check.run("ingest", config)
    assert report.success, [o.line() for o in report.failures]

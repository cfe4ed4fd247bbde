"""The one validator and the image codec: every bad-input case names the place and what was expected."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffx.data.images import encode_png, load_modality_file, to_modality
from diffx.data.sample import BoxObject, Rejected, sample_problems, validate_sample, validated
from diffx.data.spec import ModalitySpec
from diffx.errors import DataError

from .conftest import make_sample

GREY = ModalitySpec(name="thermal", channels=1)
DEPTH = ModalitySpec(name="depth", channels=1, bit_depth=16)
RGB = ModalitySpec(name="rgb", channels=3)


def test_valid_sample_passes(spec) -> None:
    assert validate_sample(make_sample("a"), spec).id == "a"


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([30, 2, 50, 12], "outside the 40x32 image"),
        ([-1, 2, 10, 12], "outside"),
        ([10, 2, 5, 12], "x_min < x_max"),
        ([5, 5, 5, 12], "x_min < x_max"),  # zero width
        ([5, 12, 9, 12], "y_min < y_max"),  # zero height
        ([float("nan"), 2, 10, 12], "not finite"),
        ([1, 2, float("inf"), 12], "not finite"),
    ],
)
def test_bad_boxes_are_named(spec, box, message) -> None:
    sample = make_sample("a", boxes=[("car", box)])
    with pytest.raises(DataError, match=rf"sample 'a'.*objects\[0\]\.bbox: .*{message}"):
        validate_sample(sample, spec)


def test_unknown_class_and_wrong_id(spec) -> None:
    sample = make_sample("a", boxes=[])
    sample.objects = [BoxObject((1, 1, 5, 5), "tram", -1), BoxObject((1, 1, 5, 5), "car", 0)]
    problems = sample_problems(sample, spec)
    assert any("'tram' is not in the class list" in p for p in problems)
    assert any("objects[1].category_id: 0 but 'car' has id 2" in p for p in problems)


def test_modality_size_mismatch(spec) -> None:
    sample = make_sample("a")
    sample.images["thermal"] = encode_png(np.zeros((30, 40), np.uint8), "t")
    assert any("thermal: size 40x30 differs" in p for p in sample_problems(sample, spec))


def test_missing_and_extra_modality(spec) -> None:
    sample = make_sample("a")
    sample.images["nir"] = sample.images.pop("depth")
    problems = sample_problems(sample, spec)
    assert any("missing ['depth']" in p for p in problems)
    assert any("unexpected ['nir']" in p for p in problems)


def test_wrong_png_mode(spec) -> None:
    sample = make_sample("a")
    sample.images["depth"] = encode_png(np.zeros((32, 40), np.uint8), "d")
    assert any("depth: PNG mode 'L', expected 'I;16'" in p for p in sample_problems(sample, spec))


def test_duplicate_ids_are_rejected_not_dropped(spec) -> None:
    rejected: list[Rejected] = []
    kept = list(validated([make_sample("a"), make_sample("b"), make_sample("a", split="val")], spec, rejected))
    assert [s.id for s in kept] == ["a", "b"]
    assert len(rejected) == 1 and "duplicate id 'a'" in rejected[0].reason


def _write(path, array, fmt="PNG") -> str:
    Image.fromarray(array).save(path, format=fmt)
    return str(path)


def test_truncated_image_names_file(tmp_path) -> None:
    path = _write(tmp_path / "x.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"x\.png: cannot decode image"):
        load_modality_file(path, RGB)


def test_corrupt_image_names_file(tmp_path) -> None:
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"junk\.jpg: cannot decode image"):
        load_modality_file(str(path), RGB)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        load_modality_file(str(tmp_path / "nope.png"), RGB)


def test_wrong_channel_counts() -> None:
    with pytest.raises(DataError, match="expected 3 channels"):
        to_modality(np.zeros((4, 4), np.uint8), RGB, "f")
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 9
    with pytest.raises(DataError, match="expected 1 channel"):
        to_modality(colour, GREY, "f")
    with pytest.raises(DataError, match="4-channel"):
        to_modality(np.zeros((4, 4, 4), np.uint8), GREY, "f")


def test_grey_in_three_channels_is_accepted() -> None:
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = to_modality(np.stack([grey] * 3, -1), GREY, "f")
    np.testing.assert_array_equal(out, grey)


def test_bit_depth_is_never_guessed() -> None:
    with pytest.raises(DataError, match="expected 16-bit grey, got 8-bit"):
        to_modality(np.zeros((4, 4), np.uint8), DEPTH, "f")
    with pytest.raises(DataError, match="expected 8-bit grey"):
        to_modality(np.zeros((4, 4), np.uint16), GREY, "f")


def test_canonical_png_bytes_are_reused_and_jpeg_is_decoded_losslessly(tmp_path) -> None:
    depth = np.random.default_rng(1).integers(0, 65535, (8, 9), dtype=np.uint16)
    png = _write(tmp_path / "d.png", depth)
    loaded = load_modality_file(png, DEPTH)
    assert loaded.data == Path(png).read_bytes()
    np.testing.assert_array_equal(loaded.to_array(), depth)
    rgb = np.random.default_rng(2).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    jpg = _write(tmp_path / "c.jpg", rgb, "JPEG")
    decoded = np.asarray(Image.open(jpg))
    encoded = load_modality_file(jpg, RGB)
    assert Image.open(io.BytesIO(encoded.data)).format == "PNG"
    np.testing.assert_array_equal(encoded.to_array(), decoded)  # PNG keeps the decoded JPEG pixels exactly

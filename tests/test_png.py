"""The generator's PNG writer: lossless for every canonical image kind, readable by Pillow, at every level."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from diffx.data.images import encode_png
from diffx.data.png import encode_png_fast


@pytest.mark.parametrize("level", [0, 1, 9])
@pytest.mark.parametrize(
    ("shape", "dtype", "mode"),
    [((37, 23, 3), np.uint8, "RGB"), ((37, 23), np.uint8, "L"), ((37, 23), np.uint16, "I;16")],
)
def test_round_trip_is_exact(level: int, shape: tuple[int, ...], dtype: type, mode: str) -> None:
    rng = np.random.default_rng(level)
    top = np.iinfo(dtype).max
    array = rng.integers(0, top + 1, size=shape, dtype=np.int64).astype(dtype)
    array[:5] = top  # runs and extremes: the up filter wraps modulo 256
    encoded = encode_png_fast(array, "sample:rgb", level)
    image = Image.open(io.BytesIO(encoded.data))
    image.load()
    assert (image.mode, image.width, image.height) == (mode, 23, 37) == (encoded.mode, encoded.width, encoded.height)
    np.testing.assert_array_equal(np.asarray(image).astype(dtype), array)


def test_smooth_frames_compress_close_to_pillow_level_6() -> None:
    y, x = np.mgrid[0:256, 0:256]
    noise = np.random.default_rng(0).integers(0, 3, size=(256, 256))
    array = np.stack([(x + noise) % 256, (y + noise) % 256, (x + y) // 2 % 256], axis=-1).astype(np.uint8)
    ours = len(encode_png_fast(array, "frame", 1).data)
    pillow = len(encode_png(array, "frame", 6).data)
    assert ours < 1.4 * pillow  # measured 1.29x on this gradient; on generated frames see the benchmark
    assert len(encode_png_fast(array, "frame", 0).data) > array.nbytes  # stored: no compression at all


def test_unsupported_arrays_name_the_source() -> None:
    with pytest.raises(ValueError, match=r"s1:depth.*float32"):
        encode_png_fast(np.zeros((4, 4), np.float32), "s1:depth")
    with pytest.raises(ValueError, match="level 12"):
        encode_png_fast(np.zeros((4, 4), np.uint8), "s1:depth", 12)

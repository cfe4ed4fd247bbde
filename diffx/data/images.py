"""Decoding source images and encoding canonical PNGs.

Canonical images are PNG (lossless). Inputs are decoded once, checked against the modality's spec,
and re-encoded only when their bytes are not already a PNG of the right mode: no lossy step anywhere.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffx.data.spec import ModalitySpec
from diffx.errors import DataError

MAX_PIXELS = 1 << 28  # ingest.max_image_pixels; real sensor frames are large, a decompression bomb is larger


def set_max_pixels(limit: int) -> None:
    """The pixel count a source image may claim, checked from its header before any decode.

    Module-wide like Pillow's own limit, so ingest's forked workers inherit it; Pillow's limit is raised above ours
    so that its warning (an abort, not a quarantine) never fires first."""
    global MAX_PIXELS
    MAX_PIXELS = limit
    Image.MAX_IMAGE_PIXELS = 2 * limit


set_max_pixels(MAX_PIXELS)


@dataclass(frozen=True)
class EncodedImage:
    """PNG bytes plus where they came from; the on-disk struct<bytes, path> of the canonical schema."""

    data: bytes
    path: str
    width: int
    height: int
    mode: str

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_array(self) -> np.ndarray:
        return decode_array(self.data, self.path)


def _open(data: bytes, source: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise DataError(
                    source,
                    f"the image claims {image.width} x {image.height} pixels, over ingest.max_image_pixels "
                    f"({MAX_PIXELS}): a decompression bomb, or a frame far larger than expected (raise the limit if "
                    "it is real)",
                )
            image.load()  # force a full decode: truncated files fail here, not later in training
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DataError(source, f"refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(source, f"cannot decode image ({err}); expected a complete PNG/JPEG/TIFF file") from None
    return image


def read_file_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder; expected an image file") from None
    except OSError as err:  # a symlink loop, a permission, an I/O error: per file, so per sample
        raise DataError(path, f"cannot be read ({err.strerror or err})") from None


def decode_array(data: bytes, source: str) -> np.ndarray:
    """Decode to HxW (grey, uint8/uint16) or HxWxC (uint8) without any colour conversion."""
    image = _open(data, source)
    return pil_to_array(image, source)


def pil_to_array(image: Image.Image, source: str) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.uint16)
    if mode == "I":
        arr = np.asarray(image)
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(source, f"32-bit integer image with values outside 0..65535 ({arr.min()}..{arr.max()})")
        return arr.astype(np.uint16)
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(image)
    if mode == "P":  # a palette: its colours, with an alpha channel only when the file declares transparency
        return np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if mode in ("LA", "CMYK", "YCbCr", "1"):
        converted = image.convert("RGBA" if mode == "LA" else "RGB" if mode != "1" else "L")
        return np.asarray(converted)
    raise DataError(source, f"unsupported image mode {mode!r}; expected L, I;16, RGB or RGBA")


def to_modality(array: np.ndarray, spec: ModalitySpec, source: str) -> np.ndarray:
    """Check an array against a modality and return it in canonical layout (HxW or HxWx3).

    Grey data stored as three equal channels (LLVIP, M3FD infrared) is accepted for a 1-channel
    modality; genuinely coloured data is not, because silently taking luma would hide a wiring error.
    """
    if array.ndim == 3 and array.shape[2] == 4:
        raise DataError(
            source,
            f"modality {spec.name!r}: got a 4-channel image; a reader must split it explicitly (e.g. MFNet keeps "
            f"thermal in channel 3), or set ingest.source.channels.{spec.name} to {{pick: N}}",
        )
    if spec.channels == 3:
        if array.ndim != 3 or array.shape[2] != 3:
            got = 1 if array.ndim == 2 else array.shape[2]
            raise DataError(source, f"modality {spec.name!r}: expected 3 channels (RGB), got {got}")
        if array.dtype != np.uint8:
            raise DataError(source, f"modality {spec.name!r}: expected 8-bit RGB, got {array.dtype}")
        return array
    if array.ndim == 3:
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise DataError(
                source,
                f"modality {spec.name!r}: expected 1 channel (or grey stored as 3 equal channels), got 3 channels "
                f"that differ; if they are meant as grey, set ingest.source.channels.{spec.name} to mean or "
                "{pick: 0}",
            )
        array = array[..., 0]
    want = np.uint8 if spec.bit_depth == 8 else np.uint16
    if array.dtype == want:
        return np.ascontiguousarray(array)
    if spec.bit_depth == 16 and array.dtype == np.uint8:
        raise DataError(source, f"modality {spec.name!r}: expected 16-bit grey, got 8-bit; refusing to guess a scale")
    raise DataError(
        source,
        f"modality {spec.name!r}: expected {spec.bit_depth}-bit grey, got {array.dtype}; "
        "set bit_depth: 16 in params.yaml or convert the source",
    )


def encode_png(array: np.ndarray, source: str, compress_level: int = 6) -> EncodedImage:
    if array.dtype == np.uint16:
        image = Image.fromarray(array)
        image = image if image.mode == "I;16" else image.convert("I;16")
    else:
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return EncodedImage(buffer.getvalue(), source, image.width, image.height, image.mode)


def load_modality_file(path: str, spec: ModalitySpec, compress_level: int = 6) -> EncodedImage:
    """Read a file from disk as a canonical image of ``spec``, reusing its bytes when already canonical."""
    data = read_file_bytes(path)
    image = _open(data, path)
    if image.mode == "1":
        raise DataError(path, f"modality {spec.name!r}: a 1-bit (black and white) image; expected {spec.bit_depth}-bit")
    array = to_modality(pil_to_array(image, path), spec, path)
    if image.format == "PNG" and image.mode == spec.pil_mode:
        return EncodedImage(data, path, image.width, image.height, image.mode)
    return encode_png(array, path, compress_level)


def probe_png(data: bytes, source: str) -> tuple[int, int, str]:
    """Width, height and mode from the header only (cheap validation of already-canonical bytes)."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(source, f"not a readable image ({err})") from None
    if image.format != "PNG":
        raise DataError(source, f"expected PNG bytes, got {image.format}")
    return image.width, image.height, image.mode

"""Image grids for people to look at: RGB as is, thermal and depth through colour maps.

Colour maps are small anchor tables interpolated in numpy (perceptually ordered like matplotlib's
inferno and viridis), so no plotting library is needed in the default install.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

_ANCHORS = {
    "inferno": [
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 255, 164),
    ],
    "viridis": [
        (68, 1, 84),
        (70, 50, 127),
        (54, 92, 141),
        (39, 127, 142),
        (31, 161, 135),
        (74, 194, 109),
        (159, 218, 58),
        (253, 231, 37),
    ],
}
COLOUR_MAPS = {"thermal": "inferno", "depth": "viridis", "nir": "inferno", "swir": "inferno"}


def _lut(name: str) -> np.ndarray:
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)
    positions = np.linspace(0, 1, len(anchors))
    levels = np.linspace(0, 1, 256)
    return np.stack([np.interp(levels, positions, anchors[:, c]) for c in range(3)], axis=1).astype(np.uint8)


def to_display(array: np.ndarray, modality: str) -> np.ndarray:
    """HxW or HxWx3 float in [0, 1] (or CxHxW) -> HxWx3 uint8; grey modalities get a colour map."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    values = np.clip(array, 0.0, 1.0)
    if values.ndim == 3:
        return (values * 255 + 0.5).astype(np.uint8)
    if modality == "depth":  # near is bright: invert so the far sky does not dominate the map
        values = 1.0 - values
    return _lut(COLOUR_MAPS.get(modality, "inferno"))[(values * 255 + 0.5).astype(np.uint8)]


def layout_display(layout: np.ndarray, label_map: bool) -> np.ndarray:
    """A 1 x H x W stored layout -> HxWx3 uint8: label ids in fixed distinct colours, intensities in grey."""
    values = np.asarray(layout)[0]
    if not label_map:
        grey = (np.clip(values, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    ids = values.astype(np.int64)
    palette = (np.stack([ids * 97, ids * 57 + 80, ids * 151 + 30], axis=-1) % 256).astype(np.uint8)
    palette[ids == 0] = 0
    return palette


def _wrap(text: str, width_px: int, char_px: int = 6) -> list[str]:
    """Greedy word wrap for PIL's default bitmap font (about 6 px per character)."""
    per_line = max(8, width_px // char_px)
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= per_line:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def grid_png(
    rows: list[list[np.ndarray]],
    labels: list[str],
    pad: int = 2,
    captions: list[str] | None = None,
    legend: list[tuple[str, tuple[int, int, int]]] | None = None,
) -> bytes:
    """Tiles (HxWx3 uint8, equal sizes) in rows, a header of column labels, optional caption under each row.

    ``legend``: (text, colour) entries drawn as a line under the header, so a reader can tell box sets apart.
    """
    tile_h, tile_w = rows[0][0].shape[:2]
    line_h = 11
    cols = len(rows[0])
    canvas_w = cols * (tile_w + pad) + pad
    legend_lines = _wrap("   ".join(text for text, _ in legend), canvas_w - 2 * pad) if legend else []
    header = 14 + len(legend_lines) * line_h
    wrapped = [_wrap(c, canvas_w - 2 * pad) for c in captions] if captions else [[] for _ in rows]
    row_heights = [tile_h + pad + len(lines) * line_h for lines in wrapped]
    canvas = Image.new("RGB", (canvas_w, header + sum(row_heights) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels):
        draw.text((pad + c * (tile_w + pad) + 2, 1), label, fill=(0, 0, 0))
    if legend:
        x, y = pad + 2, 14
        for text, colour in legend:
            width = 6 * len(text) + 18
            if x > pad + 2 and x + width > canvas_w - pad:
                x, y = pad + 2, y + line_h
            draw.rectangle([x, y + 2, x + 8, y + 8], outline=colour, width=2)
            draw.text((x + 12, y), text, fill=(0, 0, 0))
            x += width
    top = header + pad
    for row, lines, row_h in zip(rows, wrapped, row_heights, strict=True):
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + c * (tile_w + pad), top))
        for i, line in enumerate(lines):
            draw.text((pad + 2, top + tile_h + 1 + i * line_h), line, fill=(40, 40, 40))
        top += row_h
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def draw_boxes(
    tile: np.ndarray,
    boxes: Any,
    colour: tuple[int, int, int] = (0, 255, 0),
    names: list[str] | None = None,
    below: bool = False,
) -> np.ndarray:
    """Outline pixel boxes (N x 4, x0 y0 x1 y1) on an HxWx3 uint8 tile, each with its name when given.

    Names sit above the box (``below``: under it), so two box sets on one tile keep their labels apart.
    """
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    coords = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for i, (x0, y0, x1, y1) in enumerate(coords):
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour)
        if names and i < len(names) and names[i]:
            text = names[i]
            y = min(y1, tile.shape[0] - 10) if below else max(0, y0 - 10)
            x = min(max(0, x0), max(0, tile.shape[1] - 6 * len(text) - 2))
            draw.rectangle([x, y, x + 6 * len(text) + 1, y + 9], fill=(0, 0, 0))
            draw.text((x + 1, y - 1), text, fill=colour)
    return np.asarray(image)

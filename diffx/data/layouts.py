"""Dense layouts as data: how each kind is stored, checked, resized and handed to the UNet.

Every kind is one 8-bit grey PNG per sample (the ``layout`` column), the same frame as the images:
- ``segmentation``: label ids, value ``k`` is ``layout_classes[k]``; the UNet sees one channel per class
  (one-hot), so a class id never reads as an intensity; resized with nearest neighbours;
- ``saliency``: a 0/255 mask; ``edges``: an edge-strength map (Sobel of the RGB when the source has none);
  ``face``: any rendered map (3DDFA, normals, depth render). The UNet sees one channel in [0, 1].
An all-zero input means "no layout": what the layout dropout of training and the unconditional branch of
classifier-free guidance feed. Tensors for the model: diffx/data/layout_tensors.py (this module stays
free of torch: readers and the config import it).
"""

from __future__ import annotations

import numpy as np

from diffx.data.spec import DatasetSpec


def layout_channels(spec: DatasetSpec) -> int:
    """Input channels of the dense tokenizer for this dataset's layout."""
    if spec.layout_kind is None:
        raise ValueError("the dataset has no dense layout (layout_kind is null)")
    return len(spec.layout_classes) if spec.layout_kind == "segmentation" else 1


def is_label_map(spec: DatasetSpec) -> bool:
    """Label ids resize with nearest neighbours; everything else is an intensity."""
    return spec.layout_kind == "segmentation"


def layout_problem(array: np.ndarray, spec: DatasetSpec) -> str | None:
    """Why a decoded layout map does not fit the dataset's kind, or None."""
    if array.ndim != 2 or array.dtype != np.uint8:
        return f"expected an 8-bit grey map, got {array.dtype} with shape {array.shape}"
    if is_label_map(spec) and int(array.max()) >= len(spec.layout_classes):
        return (
            f"label value {int(array.max())} but layout_classes has {len(spec.layout_classes)} names "
            f"(values 0..{len(spec.layout_classes) - 1})"
        )
    return None


def sobel_edges(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W uint8 edge strength (Sobel magnitude of luma, scaled to the frame's maximum).

    The edge layout of the paper's Edge -> RGB+D task; computed at ingest when a source has no edge maps.
    """
    luma = np.pad(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32), 1, mode="edge")
    smooth_x = luma[:-2, :] + 2 * luma[1:-1, :] + luma[2:, :]  # vertical smoothing, then the x difference
    gx = smooth_x[:, 2:] - smooth_x[:, :-2]
    smooth_y = luma[:, :-2] + 2 * luma[:, 1:-1] + luma[:, 2:]
    gy = smooth_y[2:, :] - smooth_y[:-2, :]
    magnitude = np.hypot(gx, gy)
    peak = float(magnitude.max())
    if peak <= 0:
        return np.zeros(rgb.shape[:2], dtype=np.uint8)
    return np.round(magnitude / peak * 255.0).astype(np.uint8)

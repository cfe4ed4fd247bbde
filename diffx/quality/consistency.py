"""Per-sample checks that look *across* modalities and layout: the defects each image alone cannot show.

A thermal frame shifted by 8 px, an RGB frame mirrored or stored as BGR, one modality's file copied into
another's, boxes moved off their objects: every image still decodes, has the right size, mode and
histogram, so only comparing the modalities with each other and with the boxes finds them. Everything runs
on small grey thumbnails (one per modality, from the decode the gate does anyway), so it adds little to a
gate's single pass.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import median_filter

from diffx.data.boxes import box_iou

WORK_SIDE = 160  # thumbnails for registration: an 8 px shift stays >= 2 px up to 640 px frames
SEARCH_PX = 12  # registration shift search, in frame pixels
THUMB = 16  # near-duplicate fingerprint side
PEAK_SHARPNESS = 0.04  # correlation a true shift's peak keeps above its surroundings in both directions


def grey(values: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] for colour, the values themselves for grey."""
    if values.ndim == 3:
        return values[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return values


def shrink(values: np.ndarray, factor: int) -> np.ndarray:
    """Block means (area downsampling) by an integer factor."""
    if factor <= 1:
        return values
    h, w = (values.shape[0] // factor) * factor, (values.shape[1] // factor) * factor
    return values[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def work_factor(height: int, width: int) -> int:
    return max(1, math.ceil(max(height, width) / WORK_SIDE))


def edges(values: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a lightly smoothed image, clipped at its 99th percentile: what two modalities of
    one scene share (object outlines) whatever their units, without letting sensor noise or a few extreme
    steps (far-range depth, specular highlights) dominate."""
    values = values.astype(np.float32)
    padded = np.pad(values, 1, mode="edge")
    smooth = sum(padded[i : i + values.shape[0], j : j + values.shape[1]] for i in range(3) for j in range(3)) / 9.0
    gy, gx = np.gradient(smooth)
    magnitude = np.hypot(gx, gy)
    ceiling = float(np.percentile(magnitude, 99))
    return np.minimum(magnitude, ceiling) if ceiling > 0 else magnitude


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def shift_scores(reference: np.ndarray, moving: np.ndarray, radius: int) -> np.ndarray:
    """Edge correlation for every shift (dy, dx) in [-radius, radius]^2 (FFT; global normalisation).

    ``out[radius + dy, radius + dx]`` compares reference pixel (y, x) with moving pixel (y + dy, x + dx)."""
    a = reference - reference.mean()
    b = moving - moving.mean()
    h, w = a.shape
    shape = (h + 2 * radius, w + 2 * radius)
    spectrum = np.conj(np.fft.rfft2(a, shape)) * np.fft.rfft2(b, shape)
    full = np.fft.irfft2(spectrum, shape)
    rows = [dy % shape[0] for dy in range(-radius, radius + 1)]
    cols = [dx % shape[1] for dx in range(-radius, radius + 1)]
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return full[np.ix_(rows, cols)] / denom if denom > 0 else np.zeros((2 * radius + 1,) * 2)


def _sharpness(scores: np.ndarray, i: int, j: int, step: int = 3) -> float:
    """How far the peak stands above the scores ``step`` away, in its worse direction (row or column)."""
    h, w = scores.shape
    across = [scores[i, jj] for jj in (j - step, j + step) if 0 <= jj < w]
    along = [scores[ii, j] for ii in (i - step, i + step) if 0 <= ii < h]
    peak = scores[i, j]
    return float(min(peak - max(across, default=peak), peak - max(along, default=peak)))


def registration(reference: np.ndarray, moving: np.ndarray, factor: int, min_gain: float) -> dict[str, float]:
    """How far ``moving`` sits from ``reference`` (px), and how much better a mirrored reference fits.

    A shift counts only when it beats the zero shift by ``min_gain`` in correlation (on weak-edged real
    pairs the peak is flat and its position means nothing) and peaks inside the search window.
    """
    radius = max(2, math.ceil(SEARCH_PX / factor))
    ref, mov = edges(reference), edges(moving)
    if min(ref.shape) <= 2 * radius + 4:
        return {"misregistration_px": 0.0, "mirror_gain": 0.0, "peak_dy": 0.0, "peak_dx": 0.0, "sharpness": 0.0}
    scores = shift_scores(ref, mov, radius)
    zero = scores[radius, radius]
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    gain = float(scores[i, j] - zero)
    offset = max(abs(i - radius), abs(j - radius))
    # a peak on the window's edge, or a ridge (sharp in one direction only), is a trend such as a depth range
    # cutoff parallel to the horizon lining up with other horizontal lines: not a shift of the frame
    sharpness = _sharpness(scores, int(i), int(j)) if offset < radius else 0.0
    peaked = sharpness >= PEAK_SHARPNESS
    shift = offset * factor if gain >= min_gain and peaked else 0
    mirrored = shift_scores(np.ascontiguousarray(ref[:, ::-1]), mov, radius)
    return {
        "misregistration_px": float(shift),
        "mirror_gain": float(mirrored.max() - scores.max()),
        "peak_dy": float((i - radius) * factor),
        "peak_dx": float((j - radius) * factor),
        "sharpness": sharpness,
    }


def through_reference(to_a: dict[str, Any], to_b: dict[str, Any]) -> float | None:
    """How far b sits from a (px) as the reference sees it: the difference of their peaks against the reference,
    or None where either peak is too flat to place its modality.

    Two non-reference modalities can share edges that are not the same outline (a car's roof in depth, the top
    of its windows in thermal, 4 px lower, on a frame a near car fills): their own best shift is then a
    coincidence, and two registrations to the reference that place them together overrule it. Clearing a row
    takes a peak half as sharp as failing one (``PEAK_SHARPNESS``): a shift must be shown, not just found."""
    if min(to_a["sharpness"], to_b["sharpness"]) < PEAK_SHARPNESS / 2:
        return None
    return float(max(abs(to_b["peak_dy"] - to_a["peak_dy"]), abs(to_b["peak_dx"] - to_a["peak_dx"])))


def pair_agreement(peaks: list[tuple[float, float]], tolerance: float) -> tuple[tuple[float, float], float]:
    """The commonest peak offset of a modality pair over a set, and the share of samples within ``tolerance``
    of it. A pair whose edges truly correspond peaks at one offset (0 when registered, 8 px when a whole
    set was shifted); one whose edges do not (RGB vs a noisy depth map) scatters and is not judged."""
    if not peaks:
        return (0.0, 0.0), 0.0
    votes: dict[tuple[float, float], int] = {}
    for peak in peaks:
        votes[peak] = votes.get(peak, 0) + 1
    mode = max(sorted(votes), key=lambda k: votes[k])
    near = sum(1 for dy, dx in peaks if max(abs(dy - mode[0]), abs(dx - mode[1])) <= tolerance)
    return mode, near / len(peaks)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two thumbnails: 1 for one image under any monotone rescaling (e.g. a depth map
    written as 8-bit into the thermal slot)."""
    ra = np.argsort(np.argsort(a.ravel(), kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b.ravel(), kind="stable"), kind="stable").astype(np.float64)
    return _corr(ra, rb)


def box_contrast_signed(values: np.ndarray, objects: list[dict[str, Any]]) -> float:
    """Mean over boxes of (mean inside - mean of a ring around it) / the frame's spread, with its sign.

    Warm objects (thermal) give > 0, near ones (depth) < 0, consistently across a real set; a box moved off
    its object onto background gives about 0. Which modalities carry a reliable sign is learnt per set."""
    h, w = values.shape
    spread = float(values.std()) + 1e-6
    scores = []
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            continue
        bx0, by0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        bx1, by1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
        if bx1 - bx0 < 1 or by1 - by0 < 1:
            continue
        pad_x, pad_y = max(2, (bx1 - bx0) // 2), max(2, (by1 - by0) // 2)
        rx0, ry0, rx1, ry1 = max(0, bx0 - pad_x), max(0, by0 - pad_y), min(w, bx1 + pad_x), min(h, by1 + pad_y)
        ring = np.ones((ry1 - ry0, rx1 - rx0), dtype=bool)
        ring[by0 - ry0 : by1 - ry0, bx0 - rx0 : bx1 - rx0] = False
        if not ring.any():
            continue
        inside = float(values[by0:by1, bx0:bx1].mean())
        scores.append((inside - float(values[ry0:ry1, rx0:rx1][ring].mean())) / spread)
    return float(np.mean(scores)) if scores else math.nan


def box_content(
    signed: dict[str, np.ndarray], reference: dict[str, dict[str, float]], min_reliability: float, *, rows: int
) -> np.ndarray:
    """How typical each sample's box contrasts are, 1 = like the reference set, 0 = like bare background.

    Only modalities whose sign is reliable in the reference (|median| >= min_reliability * spread) count,
    and the best of them decides: a box need stand out in one modality where objects do. Column-wise over the
    whole table (NaN where no modality counts), so a set of 10^5 rows costs one pass per modality."""
    best = np.full(rows, np.nan)
    for name, values in signed.items():
        ref = reference.get(name)
        if ref is None or ref["median"] == 0 or abs(ref["median"]) < min_reliability * ref["spread"]:
            continue
        score = np.asarray(values, dtype=np.float64) / ref["median"]  # NaN / inf contrasts stay out below
        score = np.where(np.isfinite(score), score, np.nan)
        best = np.fmax(best, score)  # fmax: NaN only where both are NaN
    return best


def duplicate_boxes(objects: list[dict[str, Any]], min_iou: float) -> int:
    """Pairs of same-class boxes overlapping by more than ``min_iou``: one object labelled twice."""
    count = 0
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            if a["category"] == b["category"] and box_iou(a["bbox"], b["bbox"]) > min_iou:
                count += 1
    return count


def fingerprint(values: np.ndarray) -> np.ndarray:
    """A 16x16 zero-mean, unit-norm thumbnail: near-identical frames have a dot product near 1."""
    h, w = values.shape
    ys = np.linspace(0, h, THUMB + 1).astype(int)
    xs = np.linspace(0, w, THUMB + 1).astype(int)
    thumb = np.array(
        [
            [values[ys[i] : max(ys[i + 1], ys[i] + 1), xs[j] : max(xs[j + 1], xs[j] + 1)].mean() for j in range(THUMB)]
            for i in range(THUMB)
        ],
        dtype=np.float64,
    ).ravel()
    thumb -= thumb.mean()
    norm = np.linalg.norm(thumb)
    return thumb / norm if norm > 0 else thumb


def cross_split_twins(ids: list[str], splits: list[str], prints: np.ndarray, min_similarity: float) -> list[str | None]:
    """For each sample, the id of a near-identical sample in *another* split (train/test leakage), else None.

    Blockwise dot products: O(n^2) but BLAS-fast (a 100k-sample set is a few seconds per split pair)."""
    out: list[str | None] = [None] * len(ids)
    labels = np.asarray(splits)
    for split in sorted(set(splits)):
        mine = np.flatnonzero(labels == split)
        others = np.flatnonzero(labels != split)
        if not len(mine) or not len(others):
            continue
        for start in range(0, len(mine), 4096):
            block = mine[start : start + 4096]
            sims = prints[block] @ prints[others].T
            best = sims.argmax(axis=1)
            for row, k in enumerate(block):
                if sims[row, best[row]] >= min_similarity:
                    out[k] = ids[others[best[row]]]
    return out


def impulse_fraction(values: np.ndarray, jump: float = 0.25, extreme: float = 0.02) -> float:
    """The share of pixels at an end of the range (within ``extreme`` of 0 or 1) that differ from the median of
    their 3x3 neighbourhood by more than ``jump``: salt-and-pepper noise from a failing sensor or transfer, which
    sets isolated pixels to full or zero, rather than texture or edges, which seldom reach either end.

    Real frames stay at 0.02 % or less (LLVIP, MFNet, SUN RGB-D); the demo's depth at 48 x 32 px at 1.5 %."""
    smooth = median_filter(values, size=3, mode="nearest")
    pulses = (np.abs(values - smooth) > jump) & ((values <= extreme) | (values >= 1.0 - extreme))
    return float(pulses.mean())


def colour_print(values: np.ndarray) -> np.ndarray:
    """Per channel (R, G, B): mean, spread, 10th and 90th percentile, and the means of the top and bottom thirds.

    What a scene's colours look like, in an order that a red-blue swap permutes (see ``channel_swap_scores``)."""
    h = values.shape[0]
    third = max(1, h // 3)
    stats = []
    for c in range(3):
        channel = values[..., c]
        low, high = np.quantile(channel, [0.1, 0.9])
        stats += [channel.mean(), channel.std(), low, high, channel[:third].mean(), channel[-third:].mean()]
    return np.asarray(stats, dtype=np.float64)


def channel_swap_scores(prints: np.ndarray, k: int = 3, min_rows: int = 20) -> np.ndarray:
    """How much more typical of the set each RGB frame looks with red and blue exchanged: the distance to its
    k-th nearest neighbour as stored over that distance once swapped. A frame stored as BGR among RGB ones
    scores well above 1; a set whose red and blue look alike scores about 1 everywhere (no verdict either way),
    and so does a set stored as BGR throughout, which only a reference from other data can tell.

    NaN for sets under ``min_rows``: too few neighbours to say what is typical."""
    n = len(prints)
    if n < min_rows:
        return np.full(n, np.nan)
    swapped = prints.reshape(n, 3, -1)[:, ::-1].reshape(n, -1)
    centre = np.median(prints, axis=0)
    scale = 1.4826 * np.median(np.abs(prints - centre), axis=0) + 1e-3
    a, b = prints / scale, swapped / scale
    kth = min(k, n - 1) - 1
    return _kth_distance(a, a, kth) / np.maximum(_kth_distance(b, a, kth), 1e-9)


def _kth_distance(queries: np.ndarray, pool: np.ndarray, kth: int, chunk: int = 1024) -> np.ndarray:
    """Distance from query i to its (kth+1)-nearest row of ``pool`` other than row i; in chunks of queries, so a
    set of 10^4 frames needs about 80 MB rather than an n x n x features array."""
    pool_sq = (pool**2).sum(axis=1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        squared = (block**2).sum(axis=1)[:, None] + pool_sq[None] - 2.0 * block @ pool.T
        rows = np.arange(len(block))
        squared[rows, start + rows] = np.inf  # a frame is not its own neighbour
        out[start : start + len(block)] = np.sqrt(np.maximum(np.partition(squared, kth, axis=1)[:, kth], 0.0))
    return out

"""The template captioner: the offline default, grounded only in the layout and simple image statistics.

It writes the DiffX style ("An image of ...", 3-5 sentences: main objects and where they are, the rest,
the scene, time of day, what the other modalities show) deterministically, so ``dvc repro`` on a machine
without a GPU or model weights still gets real captions. Day and night come from RGB brightness, warm
objects from the thermal image inside each box, distances from the boxes' share of the frame. The place
word is data (:mod:`diffx.caption.scene`), and a frame without boxes gets no claim about what is absent:
an unlabelled frame is not an empty one. Image statistics are taken on a subsampled copy of large frames
(every k-th pixel, at most ``STATS_SIDE`` px a side), which keeps a 1280x1024 pair cheap.
"""

from __future__ import annotations

import numpy as np

from diffx.caption.layout_text import class_counts, counted, join_words, place
from diffx.caption.scene import scene_noun, with_article
from diffx.data.sample import BoxObject, Sample
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError

NAME = "template"
STATS_SIDE = 320  # brightness, warmth and depth medians need no more pixels than this a side


def _luma(rgb: np.ndarray) -> float:
    return float((0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).mean() / 255.0)


def _patch(array: np.ndarray, bbox: tuple[float, float, float, float], step: int) -> np.ndarray:
    """The box's pixels in an array subsampled by ``step`` (at least one pixel per box)."""
    x0, y0, x1, y1 = (round(v / step) for v in bbox)
    return array[max(y0, 0) : max(y1, y0 + 1), max(x0, 0) : max(x1, x0 + 1)]


def _warm_classes(sample: Sample, thermal: np.ndarray, max_value: int, step: int = 1) -> list[str]:
    """Classes whose boxes are clearly warmer than the frame (median + 0.12 of the range)."""
    background = float(np.median(thermal)) / max_value
    warm = []
    for obj in sample.objects:
        patch = _patch(thermal, obj.bbox, step)
        if patch.size and float(np.percentile(patch, 90)) / max_value > background + 0.12:
            warm.append(obj.category)
    return sorted(set(warm), key=warm.index)


def when_phrase(caption: str | None) -> str:
    """The time-of-day phrase of a caption (' at night', ...), to carry over when a layout is edited."""
    text = (caption or "").lower()
    for phrase in (" at night", " at dusk", " in daylight"):
        if phrase.strip() in text:
            return phrase
    return ""


def layout_sentences(
    objects: list[BoxObject], width: int, height: int, when: str, classes: tuple[str, ...], scene: str
) -> list[str]:
    """The sentences that only need the layout: counts, the two most prominent objects, the rest.

    ``scene`` is the noun phrase of :func:`diffx.caption.scene.scene_noun` ("street scene", "indoor scene")."""
    sentences = []
    counts = class_counts(o.category for o in objects)
    ordered = sorted(counts, key=lambda c: (-counts[c], classes.index(c) if c in classes else 99, c))
    opening = f"An image of {with_article(scene)}{when}"
    if counts:
        sentences.append(f"{opening} with {join_words([counted(c, counts[c]) for c in ordered])}.")
    else:
        sentences.append(f"{opening}.")
    ranked = sorted((place(o.category, o.bbox, width, height) for o in objects), key=lambda p: -p.area)
    for rank, box in enumerate(ranked[:2]):
        where = "in the centre" if box.side == "centre" else f"on the {box.side}"
        name = box.category.replace("_", " ")
        lead = f"The most prominent object is a {name}" if rank == 0 else f"A {name} is"
        sentences.append(f"{lead} {where}, {box.distance}.")
    if len(ranked) > 2:
        rest = class_counts(box.category for box in ranked[2:])
        sentences.append(
            f"Further away {'is' if sum(rest.values()) == 1 else 'are'} "
            f"{join_words([counted(c, n) for c, n in sorted(rest.items())])}."
        )
    return sentences


class TemplateCaptioner:
    """Deterministic captions; ``source`` is what lands in ``caption_source``."""

    source = NAME
    model_id = "template-v2"

    def __init__(self, spec: DatasetSpec, scene: str | None = None):
        self.spec = spec
        self.scene = scene_noun(spec.classes, scene)
        self.prompt = f"scene: {self.scene}"  # part of the cache key: another scene word is another caption

    def caption(self, sample: Sample) -> str:
        spec = self.spec
        step = max(1, -(-max(sample.width, sample.height) // STATS_SIDE))
        arrays = {name: image.to_array()[::step, ::step] for name, image in sample.images.items()}
        rgb_name = next((m.name for m in spec.modalities if m.channels == 3), None)
        when = ""
        if rgb_name is not None:
            luma = _luma(arrays[rgb_name])
            when = " at night" if luma < 0.22 else " at dusk" if luma < 0.33 else " in daylight"
        counts = class_counts(o.category for o in sample.objects)
        ranked = sorted(
            ((o, place(o.category, o.bbox, sample.width, sample.height)) for o in sample.objects),
            key=lambda pair: -pair[1].area,
        )
        sentences = layout_sentences(sample.objects, sample.width, sample.height, when, spec.classes, self.scene)
        for modality in spec.modalities:
            if modality.name == "thermal" and sample.objects:
                warm = _warm_classes(sample, arrays["thermal"], modality.max_value, step)
                if warm:
                    names = [
                        c.replace("_", " ") if counts[c] == 1 else counted(c, counts[c]).split(" ", 1)[1] for c in warm
                    ]
                    verb = "is" if len(warm) == 1 and counts[warm[0]] == 1 else "are"
                    sentences.append(
                        f"In the thermal image the {join_words(names)} {verb} warm against the cooler background."
                    )
            if modality.name == "depth" and modality.scale and ranked:
                nearest, box = ranked[0]
                patch = _patch(arrays["depth"], nearest.bbox, step)
                if patch.size:
                    metres = float(np.median(patch)) * modality.scale
                    sentences.append(
                        f"The depth map puts the {box.category.replace('_', ' ')} about "
                        f"{max(1, round(metres))} metres from the camera."
                    )
        return " ".join(sentences[:5])

    def caption_batch(self, samples: list[Sample]) -> list[str]:
        out = []
        for sample in samples:
            try:
                out.append(self.caption(sample))
            except DataError as err:
                raise DataError(f"sample {sample.id!r}", f"the captioner cannot read its image ({err})") from None
        return out

"""Procedural, aligned RGB + thermal + depth street scenes with exact boxes: the bundled demo dataset.

Why procedural: the real datasets cannot be redistributed, yet ``dvc repro`` must run the whole chain
offline on a laptop. The scenes follow enough physics that a model has something real to learn:

* one pinhole camera 1.5 m above a ground plane; depth comes from that plane, object sizes from their
  metric size and distance, so far objects are small and high in the frame;
* objects are painted far to near with one set of masks for all three modalities, so occlusion is
  identical in RGB, thermal and depth, and each box is the extent of the object's *visible* pixels;
* thermal: people and running engines and tyres are warm, the sky is cold, the road is warm by day
  and cools at night; glass reflects the cold sky; thermal optics are soft (blur) and noisy;
* RGB: daylight or night with lit windows and headlights; depth in millimetres, 16-bit, with noise
  that grows with the square of the distance as for a stereo sensor;
* a segmentation map from the same masks (sky, road, sidewalk, grass, building and the three object
  classes): the dense layout of the segmentation-guided chain (presets/demo-seg.yaml).

Everything is drawn from one ``numpy.random.Generator`` seeded by (seed, split, index), so any sample
can be regenerated alone and the whole set is a pure function of the seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from diffx import fsio
from diffx.data.spec import DatasetSpec, ModalitySpec

CLASSES = ("person", "bicycle", "car")
CLASS_WEIGHTS = (0.45, 0.2, 0.35)
MAX_DEPTH_MM = 65535
CAMERA_HEIGHT_M = 1.5
MIN_VISIBLE_SIDE_PX = 3  # visible boxes thinner than this are not labelled
MAX_VISIBLE_ASPECT = 12.0  # nor boxes this much longer than wide (a person stands ~4:1; longer is a cut-off edge)
# nearest and farthest an object stands (m): the library's default, the world the tests draw their small fixtures
# in; the bundled demo stands objects nearer (DemoConfig.object_distance_m, docs/demo-results.md)
OBJECT_DISTANCE_M = (4.0, 24.0)
# segmentation labels of the demo's dense layout: the scene's stuff, then the object classes (value = index)
LAYOUT_CLASSES = ("sky", "road", "sidewalk", "grass", "building", *CLASSES)

DEMO_SPEC = DatasetSpec(
    modalities=(
        ModalitySpec(name="rgb", channels=3, bit_depth=8, units="srgb"),
        ModalitySpec(name="thermal", channels=1, bit_depth=8, units="relative_temperature"),
        ModalitySpec(name="depth", channels=1, bit_depth=16, units="millimetre", scale=0.001),
    ),
    classes=CLASSES,
)


@dataclass
class Part:
    """One drawn primitive of an object: its mask plus its colour and temperature."""

    mask: np.ndarray
    rgb: tuple[int, int, int]
    heat: float


@dataclass
class PlacedObject:
    category: str
    z: float
    parts: list[Part] = field(default_factory=list)


@dataclass
class Scene:
    rgb: np.ndarray
    thermal: np.ndarray
    depth: np.ndarray
    boxes: list[tuple[str, tuple[float, float, float, float]]]
    night: bool
    labels: np.ndarray  # H x W uint8 segmentation: an index into LAYOUT_CLASSES


class _Canvas:
    """Draws primitives into boolean masks of the frame (PIL's rasteriser, no dependencies)."""

    def __init__(self, width: int, height: int):
        self.size = (width, height)

    def _new(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        image = Image.new("L", self.size, 0)
        return image, ImageDraw.Draw(image)

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        image, draw = self._new()
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], fill=255)
        return np.asarray(image) > 0

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, width: int = 0) -> np.ndarray:
        image, draw = self._new()
        box = [x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)]
        if width > 0:
            draw.ellipse(box, outline=255, width=width)
        else:
            draw.ellipse(box, fill=255)
        return np.asarray(image) > 0

    def polygon(self, points: list[tuple[float, float]]) -> np.ndarray:
        image, draw = self._new()
        draw.polygon(points, fill=255)
        return np.asarray(image) > 0

    def line(self, points: list[tuple[float, float]], width: int) -> np.ndarray:
        image, draw = self._new()
        draw.line(points, fill=255, width=max(1, width))
        return np.asarray(image) > 0


def _palette(rng: np.random.Generator, night: bool) -> dict[str, Any]:
    light = rng.uniform(0.18, 0.3) if night else rng.uniform(0.85, 1.1)
    return {"light": light, "night": night}


def _shade(colour: tuple[int, int, int], light: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * light, 0, 255)) for c in colour)  # type: ignore[return-value]


def _person(
    canvas: _Canvas, rng: np.random.Generator, u: float, base: float, scale: float, light: float, night: bool
) -> list[Part]:
    height = rng.uniform(1.6, 1.9) * scale
    width = 0.45 * height / 1.75
    top = base - height
    skin = _shade(
        tuple(int(v) for v in rng.choice([[224, 172, 140], [198, 134, 96], [141, 85, 56], [250, 210, 180]])), light
    )
    shirt = _shade(tuple(int(v) for v in rng.integers(20, 235, 3)), light)
    trousers = _shade(tuple(int(v) for v in rng.integers(15, 120, 3)), light)
    head_r = 0.065 * height
    leg_top = top + 0.52 * height
    step = rng.uniform(-0.12, 0.12) * width
    parts = [
        Part(canvas.rect(u - width * 0.42 - step, leg_top, u - width * 0.05 - step, base), trousers, 0.74),
        Part(canvas.rect(u + width * 0.05 + step, leg_top, u + width * 0.42 + step, base), trousers, 0.74),
        Part(canvas.rect(u - width * 0.5, top + 2.0 * head_r, u + width * 0.5, leg_top + 0.02 * height), shirt, 0.8),
        Part(
            canvas.line([(u - width * 0.5, top + 2.3 * head_r), (u - width * 0.62, leg_top)], int(width * 0.22)),
            shirt,
            0.8,
        ),
        Part(
            canvas.line([(u + width * 0.5, top + 2.3 * head_r), (u + width * 0.62, leg_top)], int(width * 0.22)),
            skin,
            0.9,
        ),
        Part(canvas.ellipse(u - head_r, top, u + head_r, top + 2.1 * head_r), skin, 0.95),
    ]
    return parts


def _car(
    canvas: _Canvas,
    rng: np.random.Generator,
    u: float,
    base: float,
    scale: float,
    light: float,
    night: bool,
    engine_on: bool,
) -> list[Part]:
    side = bool(rng.random() < 0.5)
    length = (rng.uniform(3.9, 4.7) if side else rng.uniform(1.7, 1.9)) * scale
    height = rng.uniform(1.35, 1.6) * scale
    x0, x1 = u - length / 2, u + length / 2
    top = base - height
    body = _shade(
        tuple(
            int(v)
            for v in rng.choice(
                [[200, 30, 30], [30, 60, 160], [220, 220, 225], [25, 25, 30], [120, 120, 130], [200, 170, 40]]
            )
        ),
        light,
    )
    glass = _shade((45, 60, 75), max(light, 0.35))
    ambient = 0.42 if not night else 0.33
    body_heat = ambient + 0.08
    wheel_heat = 0.7 if engine_on else ambient
    hood_heat = 0.82 if engine_on else ambient + 0.05
    waist = top + 0.45 * height
    parts = [Part(canvas.rect(x0, waist, x1, base - 0.12 * height), body, body_heat)]
    if side:
        inset = 0.18 * length
        parts.append(
            Part(
                canvas.polygon(
                    [(x0 + inset, waist), (x0 + inset * 1.6, top), (x1 - inset * 1.4, top), (x1 - inset * 0.7, waist)]
                ),
                body,
                body_heat,
            )
        )
        parts.append(
            Part(
                canvas.polygon(
                    [
                        (x0 + inset * 1.3, waist - 1),
                        (x0 + inset * 1.75, top + 0.1 * height),
                        (x1 - inset * 1.5, top + 0.1 * height),
                        (x1 - inset * 0.95, waist - 1),
                    ]
                ),
                glass,
                0.2,
            )
        )
        front = x1 if rng.random() < 0.5 else x0
        hood = (
            (front - 0.25 * length, waist, front, base - 0.2 * height)
            if front == x1
            else (front, waist, front + 0.25 * length, base - 0.2 * height)
        )
        parts.append(Part(canvas.rect(*hood), body, hood_heat))
        radius = 0.17 * length / 2.5
        for wx in (x0 + 0.2 * length, x1 - 0.2 * length):
            parts.append(
                Part(canvas.ellipse(wx - radius, base - 2 * radius, wx + radius, base), (18, 18, 20), wheel_heat)
            )
        if night:
            lamp = (
                (front - 0.05 * length, waist + 0.05 * height, front, waist + 0.2 * height)
                if front == x1
                else (front, waist + 0.05 * height, front + 0.05 * length, waist + 0.2 * height)
            )
            parts.append(Part(canvas.rect(*lamp), (255, 240, 190), hood_heat))
    else:
        parts.append(
            Part(
                canvas.polygon(
                    [
                        (x0 + 0.1 * length, waist),
                        (x0 + 0.2 * length, top),
                        (x1 - 0.2 * length, top),
                        (x1 - 0.1 * length, waist),
                    ]
                ),
                body,
                body_heat,
            )
        )
        parts.append(
            Part(
                canvas.polygon(
                    [
                        (x0 + 0.16 * length, waist - 1),
                        (x0 + 0.24 * length, top + 0.1 * height),
                        (x1 - 0.24 * length, top + 0.1 * height),
                        (x1 - 0.16 * length, waist - 1),
                    ]
                ),
                glass,
                0.2,
            )
        )
        wheel_w = 0.14 * length
        for wx in (x0 + 0.04 * length, x1 - 0.04 * length - wheel_w):
            parts.append(Part(canvas.rect(wx, base - 0.16 * height, wx + wheel_w, base), (18, 18, 20), wheel_heat))
        lamp_colour = (255, 40, 30) if (not night or rng.random() < 0.5) else (255, 240, 190)
        lamp_colour = lamp_colour if night else _shade((200, 30, 25), light)
        for lx in (x0 + 0.05 * length, x1 - 0.2 * length):
            parts.append(
                Part(
                    canvas.rect(lx, waist + 0.08 * height, lx + 0.15 * length, waist + 0.2 * height),
                    lamp_colour,
                    hood_heat,
                )
            )
        parts.append(
            Part(
                canvas.rect(u - 0.12 * length, base - 0.2 * height, u - 0.04 * length, base - 0.12 * height),
                (30, 30, 30),
                0.9 if engine_on else ambient,
            )
        )  # exhaust
    return parts


def _bicycle(
    canvas: _Canvas, rng: np.random.Generator, u: float, base: float, scale: float, light: float, night: bool
) -> list[Part]:
    length = rng.uniform(1.6, 1.8) * scale
    radius = 0.34 * scale
    frame = _shade(tuple(int(v) for v in rng.integers(30, 230, 3)), light)
    tyre = _shade((25, 25, 25), light)
    ambient = 0.4 if not night else 0.3
    thick = max(1, round(0.05 * scale))
    rear, front = u - length / 2 + radius, u + length / 2 - radius
    hub_y = base - radius
    seat = (rear + 0.35 * length, base - 2.6 * radius)
    bars = (front - 0.08 * length, base - 2.9 * radius)
    crank = (u - 0.02 * length, hub_y)
    return [
        Part(
            canvas.ellipse(rear - radius, base - 2 * radius, rear + radius, base, width=thick + 1), tyre, ambient + 0.05
        ),
        Part(
            canvas.ellipse(front - radius, base - 2 * radius, front + radius, base, width=thick + 1),
            tyre,
            ambient + 0.05,
        ),
        Part(canvas.line([(rear, hub_y), crank, seat, (rear, hub_y)], thick), frame, ambient),
        Part(canvas.line([crank, (bars[0] - 0.05 * length, seat[1]), seat], thick), frame, ambient),
        Part(canvas.line([(front, hub_y), bars], thick), frame, ambient),
        Part(
            canvas.line([(seat[0] - 0.06 * length, seat[1]), (seat[0] + 0.06 * length, seat[1])], thick + 1),
            tyre,
            ambient,
        ),
    ]


def render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    object_distance_m: tuple[float, float] = OBJECT_DISTANCE_M,
) -> Scene:
    """Render one scene; every random draw comes from ``rng``.

    ``object_distance_m`` is how far from the camera objects stand: it sets how many pixels (and latent cells) an
    object covers at a given frame size, the demo world's object scale."""
    night = bool(rng.random() < 0.4)
    pal = _palette(rng, night)
    light = pal["light"]
    focal = width * rng.uniform(0.85, 1.0)
    horizon = height * rng.uniform(0.36, 0.46)
    cx = width / 2 + rng.uniform(-0.05, 0.05) * width
    ys, us = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5

    # --- background: sky, skyline, ground plane (road / sidewalk / grass)
    below = ys > horizon + 0.5
    z = np.where(below, focal * CAMERA_HEIGHT_M / np.maximum(ys - horizon, 1e-3), np.inf)
    x_lat = (us - cx) * np.where(below, z, 0) / focal
    road_half = rng.uniform(3.5, 5.5)
    sidewalk = road_half + rng.uniform(2.0, 3.5)
    depth = np.where(below, np.minimum(z * 1000.0, MAX_DEPTH_MM), MAX_DEPTH_MM)
    t_sky = (ys / max(horizon, 1.0)).clip(0, 1)
    if night:
        sky_rgb = np.stack([8 + 10 * t_sky, 10 + 12 * t_sky, 25 + 20 * t_sky], -1)
        heat = np.full((height, width), 0.04) + 0.04 * t_sky
    else:
        sky_rgb = np.stack([110 + 80 * t_sky, 160 + 60 * t_sky, 230 + 15 * t_sky], -1) * light
        heat = np.full((height, width), 0.08) + 0.06 * t_sky
    rgb = sky_rgb.copy()
    road = below & (np.abs(x_lat) < road_half)
    walk = below & ~road & (np.abs(x_lat) < sidewalk)
    grass = below & ~road & ~walk
    asphalt = np.array([88, 88, 94]) * light
    rgb[road] = asphalt
    rgb[walk] = np.array([150, 148, 142]) * light
    rgb[grass] = np.array([70, 125, 55]) * light
    heat[road] = 0.3 if night else 0.6
    heat[walk] = 0.26 if night else 0.52
    heat[grass] = 0.2 if night else 0.38
    dash = road & (np.abs(x_lat) < 0.08) & ((np.where(below, z, 0.0) % 6.0) < 3.0)
    rgb[dash] = np.array([230, 230, 220]) * max(light, 0.35)
    heat[dash] -= 0.05
    labels = np.zeros((height, width), dtype=np.uint8)  # sky
    for value, region in ((1, road), (2, walk), (3, grass)):
        labels[region] = value

    # skyline: building blocks sitting on the horizon, far away
    canvas = _Canvas(width, height)
    x = -rng.uniform(0, 0.1) * width
    while x < width:
        bw = rng.uniform(0.08, 0.22) * width
        bh = rng.uniform(0.05, 0.25) * height
        mask = canvas.rect(x, horizon - bh, x + bw, horizon + 1)
        colour = np.array(rng.choice([[150, 140, 130], [110, 105, 100], [170, 160, 150], [90, 95, 105]])) * light
        rgb[mask] = colour
        labels[mask] = 4
        heat[mask] = 0.25 if night else 0.45
        depth[mask] = rng.uniform(40000, 60000)
        if night:
            lit = mask & (rng.random((height, width)) < 0.08)
            rgb[lit] = (255, 220, 140)
            heat[lit] = 0.35
        x += bw + rng.uniform(0, 0.05) * width

    # --- objects: draw far to near so occlusion is shared by every modality
    count = int(rng.integers(2, 8))
    classes = rng.choice(len(CLASSES), size=count, p=CLASS_WEIGHTS)
    objects: list[PlacedObject] = []
    for class_index in classes:
        category = CLASSES[int(class_index)]
        z_obj = float(rng.uniform(*object_distance_m))
        lateral = (
            float(rng.uniform(-road_half + 1.0, road_half - 1.0))
            if category == "car"
            else float(rng.uniform(-sidewalk, sidewalk))
        )
        u = cx + focal * lateral / z_obj
        base = horizon + focal * CAMERA_HEIGHT_M / z_obj
        scale = focal / z_obj  # pixels per metre at that distance
        if category == "person":
            parts = _person(canvas, rng, u, base, scale, light, night)
        elif category == "car":
            parts = _car(canvas, rng, u, base, scale, light, night, engine_on=bool(rng.random() < 0.7))
        else:
            parts = _bicycle(canvas, rng, u, base, scale, light, night)
        objects.append(PlacedObject(category, z_obj, parts))

    instance = np.full((height, width), -1, dtype=np.int32)
    order = sorted(range(len(objects)), key=lambda i: -objects[i].z)
    for index in order:
        obj = objects[index]
        obj_depth = obj.z * 1000.0
        for part in obj.parts:
            rgb[part.mask] = part.rgb
            heat[part.mask] = part.heat
            depth[part.mask] = obj_depth
            instance[part.mask] = index
            labels[part.mask] = LAYOUT_CLASSES.index(obj.category)

    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    for index in sorted(range(len(objects)), key=lambda i: objects[i].z):
        rows, cols = np.nonzero(instance == index)
        if rows.size < 6:
            continue  # fully hidden or out of frame: nothing visible, nothing to label
        sides = sorted((cols.max() - cols.min() + 1, rows.max() - rows.min() + 1))
        if sides[0] < MIN_VISIBLE_SIDE_PX or sides[1] > MAX_VISIBLE_ASPECT * sides[0]:
            continue  # a sliver cut off by the frame edge: annotators of real datasets leave these unlabelled
        boxes.append(
            (
                objects[index].category,
                (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)),
            )
        )

    # --- sensors: noise, optics
    rgb_noise = rng.normal(0, 5.0 if night else 3.0, rgb.shape)
    rgb_out = np.clip(rgb + rgb_noise, 0, 255).astype(np.uint8)
    heat_img = Image.fromarray(np.clip(heat * 255.0, 0, 255).astype(np.uint8))
    heat_img = heat_img.filter(ImageFilter.GaussianBlur(radius=0.8))
    thermal = np.asarray(heat_img).astype(np.float64)
    thermal += rng.normal(0, 2.0, thermal.shape) + rng.normal(0, 1.0, (1, width))  # column pattern noise
    thermal_out = np.clip(thermal, 0, 255).astype(np.uint8)
    metres = depth / 1000.0
    depth_noisy = depth + rng.normal(0, 1.0, depth.shape) * 1.5 * metres**2
    depth_out = np.clip(np.round(depth_noisy), 1, MAX_DEPTH_MM).astype(np.uint16)
    return Scene(rgb_out, thermal_out, depth_out, boxes, night, labels)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    split_key = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([seed, split_key, index])


def coco_document(
    frames: Iterable[tuple[dict[str, Any], list[tuple[str, tuple[int, int, int, int]]]]],
    categories: Sequence[str],
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A COCO detection document from (image entry, boxes as (category, (x0, y0, x1, y1))) per frame.

    Ids are numbered from 1 in order, boxes become COCO's [x, y, w, h] with their area: the one place that
    writes the demo's annotations and the test sources' COCO files."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for entry, boxes in frames:
        image_id = len(images) + 1
        images.append({"id": image_id, **entry})
        for category, (x0, y0, x1, y1) in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": list(categories).index(category) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    document = {"info": info} if info is not None else {}
    return {
        **document,
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(categories)],
    }


def write_demo(
    output: str,
    *,
    seed: int,
    width: int,
    height: int,
    splits: dict[str, int],
    object_distance_m: tuple[float, float] = OBJECT_DISTANCE_M,
) -> dict[str, int]:
    """Write the demo as paired PNG folders + COCO JSON per split, atomically (whole folder swap)."""
    counts: dict[str, int] = {}
    with fsio.staged_folder(os.path.abspath(output)) as staging:  # a failed run keeps the previous demo
        for name in ("rgb", "thermal", "depth", "segmentation", "annotations"):
            os.makedirs(os.path.join(staging, name))
        for split, n in splits.items():
            frames = []
            for index in range(n):
                scene = render_scene(sample_rng(seed, split, index), width, height, object_distance_m)
                sample_id = f"demo-{split}-{index:05d}"
                for name, array in (
                    ("rgb", scene.rgb),
                    ("thermal", scene.thermal),
                    ("depth", scene.depth),
                    ("segmentation", scene.labels),
                ):
                    Image.fromarray(array).save(os.path.join(staging, name, f"{sample_id}.png"), compress_level=9)
                entry = {
                    "file_name": f"{sample_id}.png",
                    "width": width,
                    "height": height,
                    "extra_info": {"hours": "night" if scene.night else "day"},
                }
                frames.append((entry, scene.boxes))
            coco = coco_document(frames, CLASSES, info={"description": "diffx procedural demo", "seed": seed})
            with open(os.path.join(staging, "annotations", f"{split}.json"), "w", encoding="utf-8") as handle:
                json.dump(coco, handle, indent=1, sort_keys=True)
                handle.write("\n")
            counts[split] = n
    return counts

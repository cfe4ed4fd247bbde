"""Small datasets in the on-disk formats of the paper's tasks, rendered from the procedural demo scenes.

The preset smoke tests (tests/test_presets.py) point each preset's reader at one of these, so every task's
reader, layout kind and modality list runs end to end in CI without the real (non-redistributable) sets.
Each builder writes ``train`` and ``val`` splits of ``n`` scenes and returns the reader options that differ
from the preset's (the root, and anything the real set's geometry fixes, such as FLIR's RGB crop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffx.data.demo import CLASSES, LAYOUT_CLASSES, coco_document, render_scene, sample_rng
from diffx.data.layouts import sobel_edges

WIDTH, HEIGHT = 64, 48
SPLITS = ("train", "val")


def _scenes(n: int) -> dict[str, list[tuple[str, Any]]]:
    return {
        split: [(f"{split}{i:03d}", render_scene(sample_rng(7, split, i), WIDTH, HEIGHT)) for i in range(n)]
        for split in SPLITS
    }


def _save(path: Path, array: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _depth8(scene: Any) -> np.ndarray:
    return (255 - np.clip(scene.depth / 256, 0, 255)).astype(np.uint8)  # near is bright, as in COME15K


def _coco(path: Path, scenes: list[tuple[str, Any]], file_name: str, categories: tuple[str, ...]) -> None:
    """A dataset whose class list is shorter than the demo's labels the rest as its first class."""
    frames = [
        (
            {"file_name": file_name.format(id=sample_id), "width": WIDTH, "height": HEIGHT},
            [(c if c in categories else categories[0], box) for c, box in scene.boxes],
        )
        for sample_id, scene in scenes
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco_document(frames, categories)))


def write_mfnet(root: Path, n: int) -> dict[str, Any]:
    """MFNet: RGB + thermal in one 4-channel PNG, a 9-class label PNG, one id list per split."""
    for split, scenes in _scenes(n).items():
        for sample_id, scene in scenes:
            _save(root / "images" / f"{sample_id}.png", np.dstack([scene.rgb, scene.thermal]))
            mfnet = np.zeros_like(scene.labels)  # demo labels -> MFNet's: car 1, person 2, bike 3, curve 4
            for name, value in (("car", 1), ("person", 2), ("bicycle", 3), ("sidewalk", 4)):
                mfnet[scene.labels == LAYOUT_CLASSES.index(name)] = value
            _save(root / "labels" / f"{sample_id}.png", mfnet)
        (root / f"{split}.txt").write_text("".join(f"{s}\n" for s, _ in scenes))
    return {"root": str(root), "splits": list(SPLITS)}


def write_come15k(root: Path, n: int) -> dict[str, Any]:
    """COME15K: RGB, 8-bit depth and saliency GT per split, a COCO instance JSON with 'foreground'."""
    splits = {}
    for split, scenes in _scenes(n).items():
        for sample_id, scene in scenes:
            _save(root / split / "imgs_right" / f"{sample_id}.jpg", scene.rgb, "JPEG")
            _save(root / split / "depths" / f"{sample_id}.png", _depth8(scene))
            salient = scene.labels >= LAYOUT_CLASSES.index(CLASSES[0])  # the objects
            _save(root / split / "gt_right" / f"{sample_id}.png", (salient * 255).astype(np.uint8))
        _coco(root / "annotations" / f"{split}.json", scenes, "{id}.jpg", ("foreground",))
        splits[split] = {
            "rgb": f"{split}/imgs_right",
            "depth": f"{split}/depths",
            "saliency": f"{split}/gt_right",
            "annotations": f"annotations/{split}.json",
        }
    return {"root": str(root), "splits": splits}


def write_diffx_folder(root: Path, n: int, modalities: dict[str, str], labels: str) -> dict[str, Any]:
    """The original DiffX layout: Main/<split>.txt, JPEGImages_<MOD>/<id>.jpg, labels/, render/."""
    for split, scenes in _scenes(n).items():
        (root / "Main").mkdir(parents=True, exist_ok=True)
        (root / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s, _ in scenes))
        for sample_id, scene in scenes:
            planes = {
                "RGB": scene.rgb,
                "T": scene.thermal,
                "D": _depth8(scene),
                "E": sobel_edges(scene.rgb),
                "NIR": scene.rgb.mean(axis=2).astype(np.uint8),
                "SWIR": (scene.rgb[..., 0] // 2 + scene.thermal // 2).astype(np.uint8),
            }
            for suffix in modalities.values():
                _save(root / f"JPEGImages_{suffix}" / f"{sample_id}.jpg", planes[suffix], "JPEG")
            if labels == "yolo":
                lines = [
                    f"{CLASSES.index(c)} {(x0 + x1) / 2 / WIDTH} {(y0 + y1) / 2 / HEIGHT} "
                    f"{(x1 - x0) / WIDTH} {(y1 - y0) / HEIGHT}\n"
                    for c, (x0, y0, x1, y1) in scene.boxes
                ]
                (root / "labels").mkdir(exist_ok=True)
                (root / "labels" / f"{sample_id}.txt").write_text("".join(lines))
            elif labels == "label_png":  # MFNet's classes: car 1, person 2, bike 3
                mfnet = np.zeros_like(scene.labels)
                for name, value in (("car", 1), ("person", 2), ("bicycle", 3)):
                    mfnet[scene.labels == LAYOUT_CLASSES.index(name)] = value
                _save(root / "labels" / f"{sample_id}.png", mfnet)
            elif labels == "saliency":
                salient = scene.labels >= LAYOUT_CLASSES.index(CLASSES[0])
                _save(root / "labels" / f"{sample_id}.png", (salient * 255).astype(np.uint8))
            _save(root / "render" / f"{sample_id}.png", scene.thermal)  # a stand-in for a 3DDFA rendering
    return {"root": str(root), "captions": False}

"""The procedural demo: deterministic, aligned, and physically plausible enough to learn from."""

from __future__ import annotations

import numpy as np
import pytest

from diffx.data.demo import CLASSES, LAYOUT_CLASSES, render_scene, sample_rng


def _scenes(seed: int, n: int = 24):
    return [render_scene(sample_rng(seed, "train", i), 96, 72) for i in range(n)]


def test_same_seed_same_scene_and_different_seed_differs() -> None:
    a = render_scene(sample_rng(5, "train", 3), 96, 72)
    b = render_scene(sample_rng(5, "train", 3), 96, 72)
    c = render_scene(sample_rng(6, "train", 3), 96, 72)
    for name in ("rgb", "thermal", "depth"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.boxes == b.boxes
    assert not np.array_equal(a.rgb, c.rgb)


def test_modalities_share_the_frame_and_boxes_are_exact() -> None:
    for scene in _scenes(0):
        assert scene.rgb.shape == (72, 96, 3) and scene.thermal.shape == (72, 96) and scene.depth.shape == (72, 96)
        assert scene.rgb.dtype == np.uint8 and scene.thermal.dtype == np.uint8 and scene.depth.dtype == np.uint16
        for category, (x0, y0, x1, y1) in scene.boxes:
            assert category in CLASSES
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 72


def test_people_are_warm_and_sky_is_cold() -> None:
    person_heat, sky_heat = [], []
    for scene in _scenes(1, 40):
        sky_heat.append(scene.thermal[:3].mean())
        for category, (x0, y0, x1, y1) in scene.boxes:
            if category == "person" and (x1 - x0) * (y1 - y0) >= 20:
                person_heat.append(scene.thermal[int(y0) : int(y1), int(x0) : int(x1)].max())
    assert person_heat and np.median(person_heat) > np.median(sky_heat) + 100


def test_depth_follows_the_ground_plane_and_objects_occlude_consistently() -> None:
    for scene in _scenes(2, 12):
        column = scene.depth[:, 2].astype(float)
        ground = column[int(0.8 * len(column)) :]
        assert np.all(np.diff(ground) <= 50), "ground gets nearer towards the bottom of the frame"
        for _, (x0, y0, x1, y1) in scene.boxes:
            patch = scene.depth[int(y0) : int(y1), int(x0) : int(x1)]
            assert patch.min() < 26000  # every labelled object is nearer than 26 m (placed within 24 m)


def test_day_and_night_both_occur() -> None:
    nights = {scene.night for scene in _scenes(3, 30)}
    assert nights == {True, False}


def test_the_segmentation_map_labels_every_box_with_its_class_and_the_sky_above() -> None:
    for scene in _scenes(2):
        assert scene.labels.shape == (72, 96) and int(scene.labels.max()) < len(LAYOUT_CLASSES)
        assert (scene.labels[0] == LAYOUT_CLASSES.index("sky")).mean() > 0.5  # the top row is mostly sky
        for category, (x0, y0, x1, y1) in scene.boxes:  # a box is the extent of its object's visible pixels
            inside = scene.labels[int(y0) : int(y1), int(x0) : int(x1)] == LAYOUT_CLASSES.index(category)
            assert inside.any(axis=0)[[0, -1]].all() and inside.any(axis=1)[[0, -1]].all()


def test_nearer_objects_are_larger_in_the_frame() -> None:
    """The world's object scale is a lever: standing objects nearer makes every box larger, same frame."""

    def median_side(distance: tuple[float, float]) -> float:
        sides = [
            ((x1 - x0) * (y1 - y0)) ** 0.5
            for i in range(24)
            for _, (x0, y0, x1, y1) in render_scene(sample_rng(2, "train", i), 96, 72, distance).boxes
        ]
        return float(np.median(sides))

    assert median_side((3.0, 9.0)) > 1.5 * median_side((4.0, 24.0))


def test_object_distance_must_be_a_range_in_front_of_the_camera() -> None:
    from diffx.config import DemoConfig

    assert DemoConfig(object_distance_m=(3.0, 9.0)).object_distance_m == (3.0, 9.0)
    for bad in ((9.0, 3.0), (0.0, 5.0)):
        with pytest.raises(ValueError, match="object_distance_m"):
            DemoConfig(object_distance_m=bad)

"""Class-preserving edits of segmentation layouts in the plan."""

from __future__ import annotations

import numpy as np

from diffx.data.sample import BoxObject
from diffx.sample.segment_edits import move_segment


def _scene() -> tuple[np.ndarray, list[BoxObject]]:
    labels = np.zeros((40, 100), dtype=np.uint8)
    labels[30:, :] = 4  # road-like stuff class without a box
    labels[10:30, 10:20] = 2  # a person
    labels[12:28, 70:90] = 1  # a car
    objects = [BoxObject((10.0, 10.0, 20.0, 30.0), "person", 0), BoxObject((70.0, 12.0, 90.0, 28.0), "car", 2)]
    return labels, objects


def test_a_moved_region_takes_its_box_along_and_keeps_every_class() -> None:
    labels, objects = _scene()
    results = [move_segment(labels, objects, np.random.default_rng(seed), 0.2) for seed in range(40)]
    made = [r for r in results if r is not None]
    assert made, "no edit in 40 draws"
    for edited, moved in made:
        assert set(np.unique(edited)) == set(np.unique(labels))
        assert (edited == 2).sum() == (labels == 2).sum() and (edited == 1).sum() == (labels == 1).sum()
        changed = [(a, b) for a, b in zip(objects, moved, strict=True) if a != b]
        assert len(changed) == 1
        before, after = changed[0]
        shift = after.bbox[0] - before.bbox[0]
        assert after.bbox[1:4:2] == before.bbox[1:4:2] and 0.1 * 100 - 1 <= abs(shift) <= 0.3 * 100 + 1
        x0, y0, x1, y1 = (int(v) for v in after.bbox)
        label = 2 if after.category == "person" else 1
        assert (edited[y0:y1, x0:x1] == label).any()
        assert after.bbox[0] >= 0 and after.bbox[2] <= 100


def test_moves_are_seeded_and_never_erase_a_class() -> None:
    labels, objects = _scene()
    a = move_segment(labels, objects, np.random.default_rng(3), 0.2)
    b = move_segment(labels, objects, np.random.default_rng(3), 0.2)
    assert (a is None and b is None) or (np.array_equal(a[0], b[0]) and a[1] == b[1])
    tiny = labels.copy()
    tiny[20, 45] = 7  # a one-pixel class a move could cover: such a move is refused
    for seed in range(40):
        result = move_segment(tiny, objects, np.random.default_rng(seed), 0.2)
        if result is not None:
            assert (result[0] == 7).sum() == 1
    assert move_segment(labels, [], np.random.default_rng(0), 0.2) is None

"""Words for layouts: class names, plurals, synonyms, counts and positions.

The template captioner writes with these words and the refinement rules read captions with the same
ones, so "two cars on the left" means the same thing to both.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
PLURALS = {
    "person": "people",
    "bicycle": "bicycles",
    "car": "cars",
    "bus": "buses",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
}
SYNONYMS = {
    "person": [
        "person",
        "people",
        "persons",
        "pedestrian",
        "pedestrians",
        "man",
        "men",
        "woman",
        "women",
        "child",
        "children",
    ],
    "bicycle": ["bicycle", "bicycles", "bike", "bikes", "cyclist", "cyclists"],
    "car": ["car", "cars", "automobile", "automobiles"],
}


# Object names a caption may count that are no class of the dataset: the COCO-80 things, which is what
# captioning models name. "three zebras" in a street set's caption is another image's caption, or made up.
OBJECT_NOUNS = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "kite",
    "bottle",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "bed",
    "toilet",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "toothbrush",
]


def plural(name: str) -> str:
    return PLURALS.get(name, name + "es" if name.endswith(("s", "x", "ch", "sh")) else name + "s")


def words_for(name: str) -> list[str]:
    """Every word that names class ``name`` in a caption (snake_case classes read as spaced words)."""
    spaced = name.replace("_", " ")
    return sorted(set(SYNONYMS.get(name, [])) | {spaced, plural(spaced)}, key=len, reverse=True)


def class_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words_for(name)) + r")\b", re.IGNORECASE)


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def parse_number(word: str) -> int | None:
    word = word.lower()
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.index(word) if word in NUMBER_WORDS else None


def counted(name: str, n: int) -> str:
    """'one car', 'three people'."""
    spaced = name.replace("_", " ")
    return f"{number_word(n)} {spaced if n == 1 else plural(spaced)}"


def join_words(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class PlacedBox:
    """A box with the words that place it: horizontal side and distance (from its share of the frame)."""

    category: str
    side: str  # left | centre | right
    distance: str  # close to the camera | in the middle distance | far away
    area: float  # fraction of the frame


def place(category: str, bbox: Iterable[float], width: int, height: int) -> PlacedBox:
    x0, y0, x1, y1 = bbox
    centre = (x0 + x1) / 2 / width
    side = "left" if centre < 1 / 3 else "right" if centre > 2 / 3 else "centre"
    area = max(0.0, (x1 - x0) * (y1 - y0)) / (width * height)
    distance = "close to the camera" if area > 0.08 else "far away" if area < 0.01 else "in the middle distance"
    return PlacedBox(category, side, distance, area)


def class_counts(categories: Iterable[str]) -> Counter[str]:
    return Counter(categories)

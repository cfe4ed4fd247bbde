"""Refinement rules: each reads one caption against its layout and either fixes it or flags it.

Fixes are safe rewrites (boilerplate openings, whitespace). Everything that needs judgement is a flag
that sends the caption to the review queue: classes mentioned but absent, present but never mentioned,
counts that disagree with the layout, left/right contradictions, over-long or empty captions, and
near-duplicates across the set.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from diffx.caption.layout_text import OBJECT_NOUNS, class_counts, class_pattern, parse_number, plural, words_for
from diffx.data.sample import BoxObject

BOILERPLATE = re.compile(
    r"^\s*(?:the|this)\s+(?:image|picture|photo(?:graph)?)\s+(?:shows|depicts|features|captures|contains|is of)\s+",
    re.IGNORECASE,
)
THERE_IS = re.compile(
    r"^\s*(?:in|within)\s+(?:the|this)\s+(?:image|picture|photo)\s*,?\s*(?:there\s+(?:is|are)\s+)?", re.IGNORECASE
)
NUMBER = r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d+)"
SIDE_WORDS = {
    "left": r"(?:on|to)\s+the\s+left|left\s+side|left-hand",
    "right": r"(?:on|to)\s+the\s+right|right\s+side|right-hand",
}


@dataclass
class Refined:
    caption: str
    fixes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def fix_opening(text: str) -> tuple[str, str | None]:
    """'The image shows two cars ...' -> 'An image of two cars ...'."""
    for pattern in (BOILERPLATE, THERE_IS):
        match = pattern.match(text)
        if match and not text.lower().startswith("an image of"):
            rest = text[match.end() :].strip()
            if rest:
                return f"An image of {rest[0].lower()}{rest[1:]}", "boilerplate opening rewritten to 'An image of'"
    return text, None


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def check_classes(text: str, objects: list[BoxObject], classes: tuple[str, ...]) -> list[str]:
    flags = []
    counts = class_counts(o.category for o in objects)
    for name in classes:
        mentioned = bool(class_pattern(name).search(text))
        if mentioned and counts[name] == 0:
            flags.append(f"mentions {name!r}, which the layout does not contain")
        if counts[name] and not mentioned:
            flags.append(f"never mentions {name!r} ({counts[name]} in the layout)")
    return flags


PARTIAL = re.compile(r"\b(?:further|other|another|also|more|remaining|rest|of them|some)\b", re.IGNORECASE)


def check_counts(text: str, objects: list[BoxObject], classes: tuple[str, ...]) -> list[str]:
    """An explicit number before a class word must match the layout ('two cars' with 3 cars is flagged).

    Sentences that count a part ("further away are two people", "two other cars") are not totals and
    are skipped.
    """
    counts = class_counts(o.category for o in objects)
    flags = []
    for sentence in _sentences(text):
        if PARTIAL.search(sentence):
            continue
        for name in classes:
            words = "|".join(re.escape(w) for w in words_for(name))
            for match in re.finditer(rf"\b({NUMBER})\s+(?:[a-z-]+\s+)?({words})\b", sentence, re.IGNORECASE):
                said = parse_number(match.group(1))
                if said is not None and said != counts[name]:
                    flags.append(f"says {match.group(0)!r}, the layout has {counts[name]} {name}")
    return flags


@functools.lru_cache(maxsize=16)
def _foreign_pattern(classes: tuple[str, ...]) -> re.Pattern[str] | None:
    """A count followed by an object noun that is none of ``classes``: built once per dataset, not per caption."""
    own = {w.lower() for name in classes for w in words_for(name)}
    foreign = [n for n in OBJECT_NOUNS if n not in own and plural(n) not in own]
    if not foreign:
        return None
    words = "|".join(re.escape(w) for n in foreign for w in sorted({n, plural(n)}))
    return re.compile(rf"\b({NUMBER})\s+(?:[a-z-]+\s+)?({words})\b", re.IGNORECASE)


def check_foreign_objects(text: str, classes: tuple[str, ...]) -> list[str]:
    """A counted object that is no class of the dataset ('three zebras' in a street set): the boxes cannot hold
    it, so the caption belongs to another image or was made up."""
    pattern = _foreign_pattern(tuple(classes))
    if pattern is None:
        return []
    return [
        f"counts {match.group(0)!r}, which is no class of this dataset"
        for match in pattern.finditer(text)
        if parse_number(match.group(1))
    ]


def check_sides(text: str, objects: list[BoxObject], classes: tuple[str, ...], width: int) -> list[str]:
    """A sentence that places one class on the left (right) needs a box of it with its centre on that half."""
    flags = []
    for sentence in _sentences(text):
        named = [n for n in classes if class_pattern(n).search(sentence)]
        if len(named) != 1:
            continue  # with several classes in one sentence the side may belong to any of them
        name = named[0]
        boxes = [o for o in objects if o.category == name]
        for side, pattern in SIDE_WORDS.items():
            claimed = boxes and re.search(pattern, sentence, re.IGNORECASE)
            if claimed and not any(((o.bbox[0] + o.bbox[2]) / 2 < width / 2) == (side == "left") for o in boxes):
                flags.append(f"puts a {name} on the {side}, but no {name} box is on that side")
    return flags


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def near_duplicates(
    captions: dict[str, str], threshold: float, alike: Callable[[str, str], bool] | None = None
) -> dict[str, str]:
    """id -> id of an earlier caption at least ``threshold`` similar (word-trigram Jaccard).

    Near ones are found by comparing candidates that share a trigram, which keeps the pass close to linear
    for captions that are mostly distinct. A pair for which ``alike`` holds (two frames of one fixed camera
    with the same layout) may share a caption and is not reported.
    """
    sets = {k: shingles(v) for k, v in captions.items()}
    index: dict[tuple[str, ...], list[str]] = {}
    found: dict[str, str] = {}
    for key in sorted(captions):
        mine = sets[key]
        candidates: set[str] = set()
        for gram in mine:
            candidates.update(index.get(gram, ()))
        for other in sorted(candidates):
            theirs = sets[other]
            if len(mine & theirs) / max(1, len(mine | theirs)) >= threshold and not (alike and alike(key, other)):
                found[key] = other
                break
        for gram in mine:
            index.setdefault(gram, []).append(key)
    return found


def refine_caption(
    text: str | None,
    objects: list[BoxObject],
    classes: tuple[str, ...],
    width: int,
    count_tokens: Callable[[str], int],
    max_tokens: int,
) -> Refined:
    if text is None or not text.strip():
        return Refined("", flags=["empty caption"])
    cleaned = " ".join(text.split())
    result = Refined(cleaned)
    fixed, note = fix_opening(cleaned)
    if note:
        result.caption, result.fixes = fixed, [note]
    result.flags += check_classes(result.caption, objects, classes)
    result.flags += check_counts(result.caption, objects, classes)
    result.flags += check_foreign_objects(result.caption, classes)
    result.flags += check_sides(result.caption, objects, classes, width)
    tokens = count_tokens(result.caption)
    if tokens > max_tokens:
        result.flags.append(f"{tokens} tokens, over the text encoder's {max_tokens}")
    return result

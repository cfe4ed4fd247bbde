"""What kind of scene the template captions name: data, not an assumption of streets.

Set it in params (``caption.template.scene``: any text, e.g. "bedroom", "factory floor"); left unset it is
chosen from the dataset's class list, and where the classes say nothing about the place the caption says
only "scene": a wrong place word in every caption teaches the UNet a false association.
"""

from __future__ import annotations

STREET = frozenset(
    {
        "bicycle", "bike", "bus", "car", "car_stop", "color_cone", "cyclist", "guardrail", "motor", "motorbike",
        "motorcycle", "rider", "scooter", "traffic_light", "traffic_sign", "train", "truck", "van", "vehicle",
        "other_vehicle", "bump", "curve", "hydrant", "sign", "light",
    }
)  # fmt: skip
INDOOR = frozenset(
    {
        "bathtub", "bed", "bookshelf", "cabinet", "chair", "counter", "desk", "door", "dresser", "lamp",
        "monitor", "night_stand", "pillow", "refrigerator", "shelf", "sink", "sofa", "table", "toilet", "tv",
        "window",
    }
)  # fmt: skip
FACE = frozenset({"face", "head"})


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def scene_noun(classes: tuple[str, ...] | list[str], override: str | None = None) -> str:
    """The noun phrase after 'An image of a(n)': the override, or what the class list points to."""
    if override:
        return override.strip()
    names = {_normal(c) for c in classes}
    street, indoor = len(names & STREET), len(names & INDOOR)
    if names & FACE:
        return "face"
    if indoor > street:
        return "indoor scene"
    if street:
        return "street scene"
    return "scene"


def with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"

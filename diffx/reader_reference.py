"""docs/readers.md, generated from the typed reader options: every option with its default, and one tested
example per dataset.

The options live next to each reader's code (diffx/data/readers/*.py) and their descriptions are the ones
`diffx params render` writes into params.yaml, so the reference cannot drift from what the code accepts:
tests/test_reader_reference.py fails when docs/readers.md differs from :func:`render_reference`, and runs
every example below on the shared real samples (or on a fixture in KAIST's layout) with only the options
shown.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from diffx.config import Source


@dataclass(frozen=True)
class Example:
    """A dataset as published, and the params that ingest it."""

    dataset: str
    note: str
    params: str  # YAML: the data section and ingest.source

    @property
    def format(self) -> str:
        return yaml.safe_load(self.params)["ingest"]["source"]["format"]


RGB_T = """data:
  modalities: [{name: rgb, channels: 3}, {name: thermal, channels: 1}]
"""

EXAMPLES = [
    Example(
        "LLVIP",
        "1280x1024 RGB + LWIR JPEG pairs, LWIR stored as grey in 3 equal channels (accepted as it is); one VOC XML "
        "per pair, 1-based pixels (`one_based: true` shifts the boxes by one pixel to 0-based). List only the "
        "splits your copy has: a train-only download has no `visible/test`.",
        RGB_T
        + """  classes: [person]
ingest:
  source:
    format: voc_pairs
    root: /data/LLVIP
    modalities: {rgb: "visible/{split}", thermal: "infrared/{split}"}
    splits: [train]
""",
    ),
    Example(
        "M3FD (original release)",
        "`Vis/` and `Ir/` PNG folders without splits, `Annotation/<id>.xml` with capitalised class names.",
        RGB_T
        + """  classes: [person, car, bus, motorcycle, lamp, truck]
ingest:
  source:
    format: voc_pairs
    root: /data/M3FD
    modalities: {rgb: Vis, thermal: Ir}
    annotations: Annotation
    extension: .png
    category_map: {People: person, Car: car, Bus: bus, Motorcycle: motorcycle, Lamp: lamp, Truck: truck}
""",
    ),
    Example(
        "M3FD (COCO conversion, as in ../shared/realdata/m3fd)",
        "A COCO JSON whose `file_name` drops the `M3FD_` prefix of the files on disk; classes not studied "
        "are ignored on purpose (counted, never silently lost).",
        RGB_T
        + """  classes: [person, car]
ingest:
  source:
    format: coco_folders
    root: /data/m3fd
    modalities: {rgb: vi, thermal: ir}
    annotations: {train: annotations/m3fd-train_subset_00471.json}
    filename_template: "M3FD_{file_name}"
    category_map: {People: person, Car: car}
    ignore_categories: [Lamp, Bus, Truck, Motorcycle]
""",
    ),
    Example(
        "KAIST Multispectral Pedestrian (official release)",
        "`images/setXX/VYYY/{visible,lwir}/IZZZZZ.jpg`, bbGt txt annotations, `imageSets/*.txt`. Frame names "
        "repeat in every video, so ids are `setXX/VYYY/IZZZZZ`. The LWIR JPEGs are three nearly equal channels: "
        "`channels: {thermal: mean}` says how to read them. Boxes running past the frame are clipped.",
        RGB_T
        + """  classes: [person]
ingest:
  source:
    format: kaist
    root: /data/kaist-rgbt
    splits: {train: imageSets/train-all-02.txt, test: imageSets/test-all-20.txt}
    channels: {thermal: mean}
    drop_ignored: true
    ignore_categories: [people, cyclist, "person?"]
""",
    ),
    Example(
        "KAIST with INSANet / MLPD's COCO-style JSON",
        "Image entries name their frame under `im_name` (no extension, e.g. `set06/V000/I00019`); one template "
        "per modality finds the two files.",
        RGB_T
        + """  classes: [person]
ingest:
  source:
    format: coco_folders
    root: /data/kaist-rgbt
    modalities: {rgb: images, thermal: images}
    annotations: {test: kaist_annotations_test20.json}
    file_name_key: im_name
    filename_template: {rgb: "{dir}/visible/{stem}.jpg", thermal: "{dir}/lwir/{stem}.jpg"}
    channels: {thermal: mean}
    ignore_categories: [people, cyclist, "person?"]
""",
    ),
    Example(
        "MFNet (release)",
        "One 4-channel PNG per id (thermal in channel 3), 9-class label PNGs, `train/val/test.txt`; boxes are "
        "the connected components of the box classes.",
        RGB_T
        + """  classes: [person, bicycle, car]
ingest:
  source:
    format: mfnet
    root: /data/ir_seg_dataset
""",
    ),
    Example(
        "MFNet (images only, as in ../shared/realdata/mfnet)",
        "Without split files or label PNGs: every image becomes a train sample without boxes.",
        RGB_T
        + """  classes: [person, bicycle, car]
ingest:
  source:
    format: mfnet
    root: /data/mfnet
    splits: []
    labels: false
""",
    ),
    Example(
        "SUN RGB-D (with VoteNet 2D boxes)",
        "RGB (JPEG bytes under a .png name) + 16-bit depth with SUN RGB-D's bit rotation undone; 2D boxes from "
        "VoteNet label files. Template captions name an indoor scene (chosen from the class list).",
        """data:
  modalities: [{name: rgb, channels: 3}, {name: depth, channels: 1, bit_depth: 16, units: millimetre, scale: 0.001}]
  classes: [bed, night_stand, dresser, lamp, ottoman, dresser_mirror]
ingest:
  source:
    format: sunrgbd
    root: /data/sunrgbd
    labels: votenet_fixture/label
    ignore_categories: [chair, table, sofa, desk, bookshelf, pillow]
""",
    ),
    Example(
        "FLIR ADAS v2 (thermal only)",
        "RGB and thermal are different cameras; only the video test set pairs them, and only after an explicit "
        "`rgb_crop` (the RGB region covering the thermal view, measured on your copy) with `pairing: "
        "video_map`. Thermal alone needs neither.",
        """data:
  modalities: [{name: thermal, channels: 1}]
  classes: [person, bicycle, car]
ingest:
  source:
    format: flir
    root: /data/FLIR_ADAS_v2
    splits: {train: "images_{modality}_train", val: "images_{modality}_val"}
    pairing: thermal_only
""",
    ),
    Example(
        "COME15K (SOD -> RGB+D)",
        "RGB, depth and binary saliency maps; the COCO instance JSON gives one `foreground` class.",
        """data:
  modalities: [{name: rgb, channels: 3}, {name: depth, channels: 1}]
  classes: [foreground]
  layout_kind: saliency
ingest:
  source:
    format: come15k
    root: /data/COME15K
""",
    ),
    Example(
        "The original DiffX folder",
        "The layout the original DiffX scripts train from: `Main/<split>.txt`, `JPEGImages_<MOD>/`, YOLO "
        "`labels/`, `caption/`.",
        RGB_T
        + """  classes: [person, bicycle, car]
ingest:
  source:
    format: diffx_folder
    root: /data/FLIR_aligned
    modalities: {rgb: RGB, thermal: T}
    splits: [train, val]
""",
    ),
]


FALLBACK_MEANING = {
    "root": "the dataset folder; every relative path below is inside it",
    "category_map": "source class -> our class",
    "ignore_categories": "source classes left out on purpose (counted in the report, never an error)",
}
TYPE_OVERRIDES = {"channels": "dict[modality, strict \\| mean \\| {pick: N}]"}


def _type_name(annotation: Any) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    for noise in ("typing.", "diffx.data.readers.options.", "NoneType"):
        text = text.replace(noise, "None" if noise == "NoneType" else "")
    return text.replace("Literal[", "one of [")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    text = yaml.safe_dump(to_jsonable_python(value), default_flow_style=True, width=10_000)  # models, lists of them
    return f"`{text.strip().removesuffix('...').strip()}`"


def _reader_classes() -> list[type[BaseModel]]:
    union = typing.get_args(Source)[0]
    return list(typing.get_args(union))


def render_reference() -> str:
    """The whole of docs/readers.md."""
    lines = [
        "# Reader reference",
        "",
        "Generated by `diffx params readers --out docs/readers.md` from the typed options in "
        "`diffx/data/readers/*.py`; tests fail when this file is stale. Every example is run by "
        "`tests/test_reader_reference.py` with only the options shown. Try a source before ingesting it:",
        "",
        "```bash",
        "diffx ingest --dry-run      # samples per split, boxes per class, frame sizes, would-be quarantine, "
        "unmatched files",
        "```",
        "",
        "Options every reader takes:",
        "",
        "- `channels`: how a file with 3 or 4 channels becomes a 1-channel modality: `strict` (default: only "
        "grey stored as equal channels), `mean` (the colour channels averaged and rounded) or `{pick: N}`.",
        "- `category_map` / `ignore_categories`: source class -> our class, and classes left out on purpose "
        "(counted in the report). A class in neither is an error naming the annotation file.",
        "",
        "Samples that fail a check are quarantined with the reason and the source files in `reports/ingest.json`; "
        "`ingest.workers` processes decode and encode (0 = every core; the output bytes do not depend on it).",
        "",
    ]
    for cls in _reader_classes():
        fmt = cls.model_fields["format"].default
        lines += [f"## `{fmt}`", "", (cls.__doc__ or "").strip(), "", "| option | type | default | meaning |"]
        lines.append("| --- | --- | --- | --- |")
        for name, field in cls.model_fields.items():
            if name == "format":
                continue
            meaning = (field.description or FALLBACK_MEANING.get(name, "")).replace("|", "\\|")
            type_name = TYPE_OVERRIDES.get(name) or _type_name(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | {type_name} | {_default(field)} | {meaning} |")
        lines.append("")
        for example in (e for e in EXAMPLES if e.format == fmt):
            lines += [f"### {example.dataset}", "", example.note, "", "```yaml", example.params.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"

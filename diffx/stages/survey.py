"""``diffx ingest --dry-run``: what a reader finds in a source, before anything is written.

A new dataset rarely ingests on the first try: a wrong folder option leaves half the files unmatched, a class
name is missing from the map, a split folder is absent. The survey reads the source exactly as ingest would
(same reader, same validation, same worker processes) and reports what it found: samples per split, boxes
per class, frame sizes, what would be quarantined and why, and the image files under the root that no sample
used. Nothing is written.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from diffx.config import DataConfig, IngestConfig, ShardsConfig
from diffx.data.sample import Rejected, validated
from diffx.errors import DataError
from diffx.stages.ingest import built_samples, quarantine_entry, refuse_too_many_rejects

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
ANNOTATION_EXTENSIONS = (".xml", ".txt", ".json")
LISTED = 10  # examples shown per list; the counts are always complete


def _source_files(root: str, used: set[str]) -> tuple[set[str], set[str]]:
    """Image files under the root, and the annotation files lying next to one a sample used (a label file whose
    image is missing is no sample at all, where a list or a README elsewhere is not an annotation)."""
    images: set[str] = set()
    annotations: set[str] = set()
    if not root or not os.path.isdir(root):
        return images, annotations
    annotation_folders = {os.path.dirname(f) for f in used if f.lower().endswith(ANNOTATION_EXTENSIONS)}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.normpath(os.path.join(folder, name))
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.add(path)
            elif name.lower().endswith(ANNOTATION_EXTENSIONS) and os.path.normpath(folder) in annotation_folders:
                annotations.add(path)
    return images, annotations


def _of_rejected(path: str, rejected: list[Rejected]) -> bool:
    """A file of a quarantined sample (its partner image, its label file): named by the sample id (its stem, and
    the folders of a path id)."""
    parts = set(os.path.normpath(path).split(os.sep))
    stem = os.path.splitext(os.path.basename(path))[0]
    for item in rejected:
        *folders, last = item.id.split("/")
        if stem == last and parts.issuperset(folders):
            return True
    return False


def survey(data: DataConfig, options: IngestConfig, shards: ShardsConfig) -> dict[str, Any]:
    """The dry run's report (a JSON-able dict); raises what ingest would raise for a source-wide problem."""
    spec = data.spec()
    rejected: list[Rejected] = []
    splits: Counter[str] = Counter()
    boxes: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    used: set[str] = set()
    empty = 0
    for sample in validated(built_samples(data, options, shards), spec, rejected):
        splits[sample.split] += 1
        boxes.update(o.category for o in sample.objects)
        sizes[f"{sample.width}x{sample.height}"] += 1
        empty += not sample.objects
        used.update(os.path.normpath(f) for f in sample.source_files())
    for item in rejected:
        used.update(os.path.normpath(f) for f in item.files)
    root = str(getattr(options.source, "root", ""))
    images, annotations = _source_files(root, used)
    unmatched = sorted(f for f in images - used if not _of_rejected(f, rejected))
    orphans = sorted(f for f in annotations - used if not _of_rejected(f, rejected))
    total = sum(splits.values()) + len(rejected)
    try:
        refuse_too_many_rejects(options, rejected, sum(splits.values()))
        would_fail = None
    except DataError as err:
        would_fail = str(err)
    return {
        "would_fail": would_fail,  # what ingest would stop with; the dry run exits as it would
        "source": options.source.format,
        "root": root,
        "samples": sum(splits.values()),
        "samples_by_split": dict(sorted(splits.items())),
        "boxes_by_class": {c: boxes.get(c, 0) for c in spec.classes},
        "samples_without_boxes": empty,
        "frame_sizes": dict(sizes.most_common()),
        "would_quarantine": len(rejected),
        "would_quarantine_fraction": round(len(rejected) / total, 6) if total else 0.0,
        "max_quarantine_fraction": options.max_quarantine_fraction,
        "quarantine_examples": [quarantine_entry(r) for r in rejected[:LISTED]],
        "unmatched_image_files": len(unmatched),
        "unmatched_examples": [os.path.relpath(p, root) for p in unmatched[:LISTED]],
        "annotations_without_sample": len(orphans),
        "annotations_without_sample_examples": [os.path.relpath(p, root) for p in orphans[:LISTED]],
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report for a terminal: one line per finding, the problems last."""
    lines = [
        f"{report['source']} at {report['root']}: {report['samples']} valid samples "
        + ", ".join(f"{s} {n}" for s, n in report["samples_by_split"].items()),
        "boxes: "
        + (", ".join(f"{c} {n}" for c, n in report["boxes_by_class"].items()) or "none")
        + f" ({report['samples_without_boxes']} samples without boxes)",
        "frame sizes: " + ", ".join(f"{s} ({n})" for s, n in report["frame_sizes"].items()),
    ]
    if report["would_quarantine"]:
        lines.append(
            f"would quarantine {report['would_quarantine']} ({report['would_quarantine_fraction']:.1%}; "
            f"ingest fails above {report['max_quarantine_fraction']:.0%}), e.g.:"
        )
        lines += [f"  {q['id']} ({q['split']}): {q['reason']}" for q in report["quarantine_examples"]]
    if report["unmatched_image_files"]:
        lines.append(f"{report['unmatched_image_files']} image file(s) under the root used by no sample, e.g.:")
        lines += [f"  {p}" for p in report["unmatched_examples"]]
    if report["annotations_without_sample"]:
        lines.append(
            f"{report['annotations_without_sample']} annotation file(s) beside the used ones that no sample read "
            "(their images are missing?), e.g.:"
        )
        lines += [f"  {p}" for p in report["annotations_without_sample_examples"]]
    return lines

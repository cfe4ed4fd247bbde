"""Exporters for detector teams: COCO JSON + image folders, and YOLO txt datasets (one per modality).

Image bytes are copied as stored (PNG), never re-encoded. Annotation files are written last, so an
interrupted export has no annotation file that claims images it does not have.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from diffx import fsio
from diffx.data.sample import Sample
from diffx.data.spec import require_compatible
from diffx.errors import DataError
from diffx.shards.reader import ShardSet


def prepare_destination(out: str, overwrite: bool, sources: dict[str, str | None]) -> None:
    """An export into a folder that already holds files would mix two datasets without a word: refuse it,
    or with ``overwrite`` clear the folder first. Never when the folder is, holds or lies inside a source:
    clearing it would delete the set being exported."""
    if problems := fsio.overlaps({"OUT": out}, sources):
        raise DataError(out, "; ".join(problems) + "; export to a folder apart from the shard sets it reads")
    fs, path = fsio.get_fs(out)
    if not fs.exists(path):
        return
    if not fs.isdir(path):
        raise DataError(out, "the export destination is a file; give a folder")
    if not fs.ls(path, detail=False):
        return
    if not overwrite:
        raise DataError(out, "the export destination is not empty; choose a new folder or pass --overwrite")
    fs.rm(path, recursive=True)


def export_coco(
    root: str, out: str, split: str | None = None, *, overwrite: bool = False, **storage_options: Any
) -> dict[str, int]:
    shard_set = ShardSet(root, **storage_options)
    prepare_destination(out, overwrite, {"ROOT": root})
    spec = shard_set.spec
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(spec.classes)]
    per_split: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: {"images": [], "annotations": []})
    for sample in shard_set.iter_samples(split):
        coco = per_split[sample.split]
        image_id = len(coco["images"]) + 1
        for name, image in sample.images.items():
            fsio.write_bytes_atomic(fsio.join(out, "images", name, sample.split, f"{sample.id}.png"), image.data)
        coco["images"].append(
            {
                "id": image_id,
                "file_name": f"{sample.split}/{sample.id}.png",
                "width": sample.width,
                "height": sample.height,
                "diffx_id": sample.id,
                "caption": sample.caption,
            }
        )
        for obj in sample.objects:
            x0, y0, x1, y1 = obj.bbox
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": obj.category_id + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(bool(obj.iscrowd)),
                    # CityPersons-style evaluators skip 'ignore' boxes: VOC's difficult ones are meant that way
                    **({"ignore": 1} if obj.difficult else {}),
                    **{k: v for k, v in obj.attributes().items() if k != "iscrowd" and v is not None},
                }
            )
    counts = {}
    for name, coco in sorted(per_split.items()):
        document = {
            "info": {
                "description": f"diffx export of {root}",
                "modalities": list(spec.modality_names),
                "image_root": "images/<modality>/",
            },
            "images": coco["images"],
            "annotations": coco["annotations"],
            "categories": categories,
        }
        fsio.write_json_atomic(fsio.join(out, "annotations", f"{name}.json"), document)
        counts[name] = len(coco["images"])
    return counts


def _write_yolo_sample(out: str, sample: Sample, split: str, modalities: tuple[str, ...]) -> None:
    lines = []
    for obj in sample.objects:
        x0, y0, x1, y1 = obj.bbox
        lines.append(
            f"{obj.category_id} {(x0 + x1) / 2 / sample.width:.6f} {(y0 + y1) / 2 / sample.height:.6f} "
            f"{(x1 - x0) / sample.width:.6f} {(y1 - y0) / sample.height:.6f}"
        )
    label = ("\n".join(lines) + "\n" if lines else "").encode()
    for name in modalities:
        image = sample.images[name]
        fsio.write_bytes_atomic(fsio.join(out, name, "images", split, f"{sample.id}.png"), image.data)
        fsio.write_bytes_atomic(fsio.join(out, name, "labels", split, f"{sample.id}.txt"), label)


def export_yolo(
    root: str,
    out: str,
    split: str | None = None,
    *,
    val_from: str | None = None,
    val_split: str = "val",
    overwrite: bool = False,
    **storage_options: Any,
) -> dict[str, int]:
    """``<out>/<modality>/{images,labels}/<split>/`` + ``data.yaml`` per modality (Ultralytics layout).

    Ultralytics needs a ``val`` split, which a synthetic-only set lacks: ``val_from`` takes it from another
    shard set (the real data's ``val_split``), which must have the same classes and every modality. Without
    ``val_from``, a ``val_split`` other than val names this set's own held-out split (LLVIP and KAIST release
    train and test only): data.yaml's ``val:`` points at that split's folder.
    """
    shard_set = ShardSet(root, **storage_options)
    spec = shard_set.spec
    val_set = ShardSet(val_from, **storage_options) if val_from else None
    if val_set is not None:
        require_compatible(val_set.spec, spec, found_in=str(val_from), needed_by=f"the export of {root}")
        if not val_set.manifest.total_rows(val_split):
            raise DataError(val_from, f"--val-from has no rows in split {val_split!r}{_held_out_hint(val_set)}")
    elif val_split != "val":
        if not shard_set.manifest.total_rows(val_split):
            raise DataError(
                root, f"--val-split {val_split!r}: the set has no rows in that split{_held_out_hint(shard_set)}"
            )
        if split not in (None, val_split):
            raise DataError(root, f"--val-split {val_split!r} is not exported with --split {split!r}; drop one")
    prepare_destination(out, overwrite, {"ROOT": root, "--val-from": val_from})
    counts: dict[str, int] = defaultdict(int)
    for sample in shard_set.iter_samples(split):
        if val_set is not None and sample.split == "val":
            continue  # the val split comes from val_from alone, never a mix of the two sets
        _write_yolo_sample(out, sample, sample.split, spec.modality_names)
        counts[sample.split] += 1
    if val_set is not None:
        for sample in val_set.iter_samples(val_split):
            _write_yolo_sample(out, sample, "val", spec.modality_names)
            counts["val"] += 1
    roles = {s: s for s in counts}
    if val_set is None and val_split != "val":
        roles["val"] = val_split
    for name in spec.modality_names:
        fsio.write_bytes_atomic(fsio.join(out, name, "data.yaml"), _data_yaml(roles, spec.classes).encode())
    return dict(counts)


def _data_yaml(roles: dict[str, str], classes: tuple[str, ...] | list[str]) -> str:
    """No ``path:`` key: Ultralytics then resolves the splits against the folder holding this file, so the export
    trains from any working directory and after it is moved (a relative ``path:`` is read against Ultralytics'
    own datasets folder, an absolute one breaks when the folder moves)."""
    lines = ["# Ultralytics dataset; the split folders are relative to this file's folder"]
    lines += [f"{role}: images/{folder}" for role, folder in sorted(roles.items())]
    lines += ["names:"] + [f"  {i}: {c}" for i, c in enumerate(classes)]
    return "\n".join(lines) + "\n"


def _held_out(shard_set: ShardSet, *, besides: tuple[str, ...] = ("train",)) -> list[str]:
    """The set's splits with rows, other than ``besides``: what could serve Ultralytics as val."""
    return [s for s in shard_set.manifest.splits if s not in besides and shard_set.manifest.total_rows(s)]


def _held_out_hint(shard_set: ShardSet) -> str:
    held_out = _held_out(shard_set)
    return f" (it has {', '.join(held_out)}: --val-split {held_out[0]})" if held_out else ""


def yolo_warnings(root: str, counts: dict[str, int], val_split: str, val_from: str | None) -> list[str]:
    """What Ultralytics will refuse in this export, and how to fix it, said at export time."""
    warnings = []
    has_val = "val" in counts or (val_from is None and val_split in counts)
    if not has_val:
        held_out = _held_out(ShardSet(root), besides=("train", "val"))
        fix = (
            f"--val-split {held_out[0]} validates on this set's {held_out[0]} split"
            if held_out
            else "--val-from <a real shard set, e.g. data/canonical> adds its val split"
        )
        warnings.append(f"the export has no val split, which Ultralytics requires; {fix}")
    if "train" not in counts:
        warnings.append(
            "the export has no train split: Ultralytics rejects a data.yaml without train: for training "
            "(export the train split too, or use these folders for prediction only)"
        )
    return warnings

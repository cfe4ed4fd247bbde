"""Exporters for detector teams: COCO JSON + image folders, and YOLO txt datasets (one per modality).

Image bytes are copied as stored (PNG), never re-encoded. Annotation files are written last, so an
interrupted export has no annotation file that claims images it does not have.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from diffx import fsio
from diffx.shards.reader import ShardSet


def export_coco(root: str, out: str, split: str | None = None, **storage_options: Any) -> dict[str, int]:
    shard_set = ShardSet(root, **storage_options)
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
                    "iscrowd": 0,
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


def export_yolo(root: str, out: str, split: str | None = None, **storage_options: Any) -> dict[str, int]:
    """``<out>/<modality>/{images,labels}/<split>/`` + ``data.yaml`` per modality (Ultralytics layout)."""
    shard_set = ShardSet(root, **storage_options)
    spec = shard_set.spec
    counts: dict[str, int] = defaultdict(int)
    for sample in shard_set.iter_samples(split):
        lines = []
        for obj in sample.objects:
            x0, y0, x1, y1 = obj.bbox
            lines.append(
                f"{obj.category_id} {(x0 + x1) / 2 / sample.width:.6f} {(y0 + y1) / 2 / sample.height:.6f} "
                f"{(x1 - x0) / sample.width:.6f} {(y1 - y0) / sample.height:.6f}"
            )
        label = ("\n".join(lines) + "\n" if lines else "").encode()
        for name, image in sample.images.items():
            fsio.write_bytes_atomic(fsio.join(out, name, "images", sample.split, f"{sample.id}.png"), image.data)
            fsio.write_bytes_atomic(fsio.join(out, name, "labels", sample.split, f"{sample.id}.txt"), label)
        counts[sample.split] += 1
    for name in spec.modality_names:
        yaml_lines = [f"path: {fsio.join(out, name)}"]
        yaml_lines += [f"{s}: images/{s}" for s in sorted(counts)]
        yaml_lines += ["names:"] + [f"  {i}: {c}" for i, c in enumerate(spec.classes)]
        fsio.write_bytes_atomic(fsio.join(out, name, "data.yaml"), ("\n".join(yaml_lines) + "\n").encode())
    return dict(counts)

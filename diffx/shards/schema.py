"""Arrow schema of canonical rows, and conversion between rows and :class:`Sample`.

The schema is derived from the DatasetSpec, so the modality list and class list travel inside every
shard (Arrow metadata), and the Hugging Face ``features`` key makes ``datasets`` decode the images.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from diffx import __version__
from diffx.data.images import EncodedImage
from diffx.data.sample import OBJECT_ATTRIBUTES, BoxObject, Sample
from diffx.data.spec import DatasetSpec

SCHEMA_VERSION = 2  # 2: object attributes (iscrowd, difficult, truncated, occlusion)
DIFFX_META_KEY = b"diffx"
HF_META_KEY = b"huggingface"

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
OBJECT_STRUCT = pa.struct(
    [
        ("bbox", pa.list_(pa.float32(), 4)),
        ("category", pa.string()),
        ("category_id", pa.int32()),
        ("iscrowd", pa.bool_()),  # the source's object attributes; null where it does not say (BoxObject)
        ("difficult", pa.bool_()),
        ("truncated", pa.bool_()),
        ("occlusion", pa.int8()),
    ]
)
PROVENANCE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("seed", pa.int64()),
    ("source_id", pa.string()),
    ("model_id", pa.string()),
    ("sampler", pa.string()),
    ("steps", pa.int32()),
    ("guidance", pa.float32()),
)

_HF_VALUE = {"string": "string", "int32": "int32", "int64": "int64", "float": "float32"}


def _hf_features(schema_fields: list[pa.Field], spec: DatasetSpec) -> dict[str, Any]:
    features: dict[str, Any] = {}
    image_columns = {*spec.modality_names, "layout"}
    for fld in schema_fields:
        if fld.name in image_columns:
            features[fld.name] = {"_type": "Image"}
        elif fld.name == "objects":
            features[fld.name] = {
                "_type": "List",
                "feature": {
                    "bbox": {"_type": "List", "length": 4, "feature": {"_type": "Value", "dtype": "float32"}},
                    "category": {"_type": "Value", "dtype": "string"},
                    "category_id": {"_type": "Value", "dtype": "int32"},
                    "iscrowd": {"_type": "Value", "dtype": "bool"},
                    "difficult": {"_type": "Value", "dtype": "bool"},
                    "truncated": {"_type": "Value", "dtype": "bool"},
                    "occlusion": {"_type": "Value", "dtype": "int8"},
                },
            }
        else:
            features[fld.name] = {"_type": "Value", "dtype": _HF_VALUE.get(str(fld.type), str(fld.type))}
    return features


def build_schema(spec: DatasetSpec, *, generated: bool = False, params_hash: str = "") -> pa.Schema:
    fields = [
        pa.field("id", pa.string()),
        pa.field("split", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        *[pa.field(name, IMAGE_STRUCT) for name in spec.modality_names],
        pa.field("objects", pa.list_(OBJECT_STRUCT)),
    ]
    if spec.layout_kind is not None:
        fields.append(pa.field("layout", IMAGE_STRUCT))
    fields += [pa.field("caption", pa.string()), pa.field("caption_source", pa.string())]
    if generated:
        fields += [pa.field(name, dtype) for name, dtype in PROVENANCE_FIELDS]
    diffx_meta = {
        "schema_version": SCHEMA_VERSION,
        "dataset": spec.model_dump(mode="json"),
        "generated": generated,
        "producer": {"diffx_version": __version__, "params_hash": params_hash},
    }
    hf_meta = {"info": {"features": _hf_features(fields, spec)}}
    return pa.schema(
        fields,
        metadata={
            DIFFX_META_KEY: json.dumps(diffx_meta, sort_keys=True),
            HF_META_KEY: json.dumps(hf_meta, sort_keys=True),
        },
    )


def diffx_metadata(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(DIFFX_META_KEY)
    if raw is None:
        raise KeyError("not a diffx shard: the Arrow schema has no 'diffx' metadata")
    return json.loads(raw)


def _image_cell(image: EncodedImage | None) -> dict[str, Any] | None:
    return None if image is None else {"bytes": image.data, "path": image.path}


def sample_to_row(sample: Sample, spec: DatasetSpec, generated: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": sample.id,
        "split": sample.split,
        "width": sample.width,
        "height": sample.height,
    }
    for name in spec.modality_names:
        row[name] = _image_cell(sample.images[name])
    row["objects"] = [
        {"bbox": list(o.bbox), "category": o.category, "category_id": o.category_id, **o.attributes()}
        for o in sample.objects
    ]
    if spec.layout_kind is not None:
        row["layout"] = _image_cell(sample.layout)
    row["caption"] = sample.caption
    row["caption_source"] = sample.caption_source
    if generated:
        for name, _ in PROVENANCE_FIELDS:
            row[name] = sample.provenance.get(name)
    return row


def _image_from_cell(cell: dict[str, Any] | None, spec_mode: str, width: int, height: int) -> EncodedImage | None:
    if cell is None:
        return None
    return EncodedImage(cell["bytes"], cell.get("path") or "", width, height, spec_mode)


def object_from_cell(cell: dict[str, Any]) -> BoxObject:
    """One ``objects`` entry back as a BoxObject, its attributes included where the row has them."""
    return BoxObject(
        tuple(cell["bbox"]),  # type: ignore[arg-type]
        cell["category"],
        int(cell["category_id"]),
        **{name: cell.get(name) for name in OBJECT_ATTRIBUTES},
    )


def row_to_sample(row: dict[str, Any], spec: DatasetSpec) -> Sample:
    """Rebuild a Sample from a row (modes are taken from the spec; validators re-probe when it matters)."""
    width, height = int(row["width"]), int(row["height"])
    images = {
        m.name: _image_from_cell(row[m.name], m.pil_mode, width, height)  # type: ignore[misc]
        for m in spec.modalities
    }
    layout = row.get("layout")
    provenance = {name: row[name] for name, _ in PROVENANCE_FIELDS if name in row}
    return Sample(
        id=row["id"],
        split=row["split"],
        width=width,
        height=height,
        images=images,  # type: ignore[arg-type]
        objects=[object_from_cell(o) for o in row["objects"]],
        layout=_image_from_cell(layout, "L", width, height) if layout else None,
        caption=row.get("caption"),
        caption_source=row.get("caption_source"),
        provenance=provenance,
    )


def schema_matches(schema: pa.Schema, expected: pa.Schema) -> bool:
    """Field-level equality plus equal dataset descriptions (producer details may differ)."""
    if not schema.remove_metadata().equals(expected.remove_metadata()):
        return False
    mine, theirs = diffx_metadata(schema), diffx_metadata(expected)
    return mine["dataset"] == theirs["dataset"] and mine["generated"] == theirs["generated"]

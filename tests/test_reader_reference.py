"""docs/readers.md is generated from the typed options, and every example in it works with only the options
shown: on the shared real samples where they exist, on a KAIST folder in the released layout otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from diffx.config import parse_config
from diffx.reader_reference import EXAMPLES, render_reference
from diffx.stages import caption, ingest
from diffx.stages.survey import survey

from .conftest import write_kaist

REPO = Path(__file__).resolve().parents[1]
BY_NAME = {e.dataset: e for e in EXAMPLES}


def _config(example_name: str, root: Path, tmp_path: Path, **ingest_extra: Any):
    raw = yaml.safe_load(BY_NAME[example_name].params)
    raw["ingest"]["source"]["root"] = str(root)
    raw["ingest"].update(
        output=str(tmp_path / "canonical"),
        report=str(tmp_path / "ingest.json"),
        metrics=str(tmp_path / "ingest-metrics.json"),
        **ingest_extra,
    )
    return parse_config(raw)


def test_docs_readers_md_is_the_generated_reference() -> None:
    assert (REPO / "docs" / "readers.md").read_text() == render_reference(), (
        "docs/readers.md is stale: run `diffx params readers --out docs/readers.md`"
    )


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_example_is_a_valid_configuration(name: str, tmp_path: Path) -> None:
    config = _config(name, tmp_path, tmp_path)
    assert config.ingest.source.format == BY_NAME[name].format


SHARED = {  # example -> (folder in ../shared/realdata, samples, boxes by class)
    "LLVIP": ("llvip", 30, {"person": 125}),
    "M3FD (COCO conversion, as in ../shared/realdata/m3fd)": ("m3fd", 1, {"person": 0, "car": 7}),
    "MFNet (images only, as in ../shared/realdata/mfnet)": ("mfnet", 2, {"person": 0, "bicycle": 0, "car": 0}),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_examples_ingest_the_shared_real_samples(realdata: Path, tmp_path: Path, name: str) -> None:
    folder, samples, boxes = SHARED[name]
    report = survey(*_sections(_config(name, realdata / folder, tmp_path)))
    assert report["would_quarantine"] == 0, report["quarantine_examples"]
    assert report["samples"] == samples and report["boxes_by_class"] == boxes
    assert report["unmatched_image_files"] == 0


def _sections(config):
    return config.data, config.ingest, config.shards


def test_sun_rgbd_example_ingests_and_its_captions_never_say_street(realdata: Path, tmp_path: Path) -> None:
    config = _config("SUN RGB-D (with VoteNet 2D boxes)", realdata / "sunrgbd", tmp_path)
    result = ingest.run(config, progress=False)
    assert result.total_rows == 30 and not result.quarantined
    config = parse_config(
        {
            **json.loads(config.model_dump_json()),
            "caption": {
                "data": str(tmp_path / "canonical"),
                "cache": None,
                "output": str(tmp_path / "captions.parquet"),
                "report": str(tmp_path / "caption.json"),
            },
        }
    )
    caption.run(config, progress=False)
    import pyarrow.parquet as pq

    texts = pq.read_table(tmp_path / "captions.parquet").column("caption").to_pylist()
    assert len(texts) == 30 and all(t.startswith("An image of an indoor scene") for t in texts)
    assert not any("street" in t or "no people" in t for t in texts)


def test_kaist_examples_ingest_a_folder_in_the_released_layout(tmp_path: Path) -> None:
    root = write_kaist(tmp_path / "kaist-rgbt")
    (root / "imageSets" / "train.txt").rename(root / "imageSets" / "train-all-02.txt")
    (root / "imageSets" / "test.txt").rename(root / "imageSets" / "test-all-20.txt")
    official = ingest.run(
        _config("KAIST Multispectral Pedestrian (official release)", root, tmp_path / "a"), progress=False
    )
    assert official.rows == {"train": 3, "test": 1} and not official.quarantined

    images = [{"id": 1, "im_name": "set00/V000/I00000"}, {"id": 2, "im_name": "set00/V001/I00000"}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 12, 30]}]
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "cyclist"}]
    (root / "kaist_annotations_test20.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    coco = ingest.run(_config("KAIST with INSANet / MLPD's COCO-style JSON", root, tmp_path / "b"), progress=False)
    assert coco.rows == {"test": 2} and not coco.quarantined

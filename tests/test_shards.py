"""Shard writer, manifest validation, readers for consumers (pyarrow, datasets, torch) and exporters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from diffx.errors import DataError, ShardError
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.export import export_coco, export_yolo
from diffx.shards.manifest import read_manifest
from diffx.shards.reader import ShardSet
from diffx.shards.validate import validate_shard_set
from diffx.shards.writer import ShardSetWriter

from .conftest import make_sample


def _write_set(root: str, spec, n_train: int = 10, n_val: int = 3, rows_per_shard: int = 4, **kw) -> list:
    writer = ShardSetWriter(root, spec, **kw)
    records = writer.write_split("train", (make_sample(f"t{i}", seed=i) for i in range(n_train)), rows_per_shard)
    records += writer.write_split(
        "val", (make_sample(f"v{i}", "val", seed=100 + i) for i in range(n_val)), rows_per_shard
    )
    writer.finalize(records)
    return records


@pytest.fixture
def shard_root(tmp_path: Path, spec) -> Path:
    root = tmp_path / "shards"
    _write_set(str(root), spec)
    return root


def test_roundtrip_keeps_bytes_boxes_and_order(shard_root: Path, spec) -> None:
    shard_set = ShardSet(str(shard_root))
    assert len(shard_set) == 13 and shard_set.manifest.splits == ["train", "val"]
    got = list(shard_set.iter_samples("train"))
    assert [s.id for s in got] == [f"t{i}" for i in range(10)]
    expected = make_sample("t3", seed=3)
    assert got[3].images["depth"].data == expected.images["depth"].data
    assert got[3].objects == expected.objects
    assert sorted(p.name for p in (shard_root / "train").glob("*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]


def test_validate_passes_on_clean_set(shard_root: Path) -> None:
    report = validate_shard_set(str(shard_root))
    assert report.ok, report.problems
    assert (report.shards, report.rows) == (4, 13)


def test_truncated_shard_fails_validation(shard_root: Path) -> None:
    path = shard_root / "train" / "part-00001.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    report = validate_shard_set(str(shard_root))
    assert not report.ok
    assert any("train/part-00001.parquet" in p and "truncated or altered" in p for p in report.problems)
    with pytest.raises(ShardError, match="truncated or altered"):
        ShardSet(str(shard_root)).open_shard(read_manifest(str(shard_root)).shards[1])


def test_checksum_mismatch_fails_validation(shard_root: Path) -> None:
    path = shard_root / "val" / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    report = validate_shard_set(str(shard_root))
    assert any("val/part-00000.parquet: sha256" in p for p in report.problems)


def test_missing_stray_and_no_manifest(shard_root: Path) -> None:
    (shard_root / "train" / "part-00002.parquet").rename(shard_root / "train" / "part-00009.parquet")
    report = validate_shard_set(str(shard_root))
    assert any("part-00002.parquet: missing" in p for p in report.problems)
    assert any("part-00009.parquet: Parquet file not listed" in p for p in report.problems)
    (shard_root / "_manifest.json").unlink()
    report = validate_shard_set(str(shard_root))
    assert not report.ok and "no manifest" in report.problems[0]


def test_duplicate_ids_across_shards(tmp_path: Path, spec) -> None:
    writer = ShardSetWriter(str(tmp_path), spec)
    records = [
        writer.write_shard("train", 0, [make_sample("x"), make_sample("y")]),
        writer.write_shard("train", 1, [make_sample("x")]),
    ]
    writer.finalize(records)
    report = validate_shard_set(str(tmp_path))
    assert any("duplicate id 'x'" in p and "part-00001" in p for p in report.problems)


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path: Path, spec) -> None:
    writer = ShardSetWriter(str(tmp_path), spec)

    def exploding():
        yield make_sample("a")
        raise RuntimeError("killed mid-shard")

    with pytest.raises(RuntimeError):
        writer.write_shard("train", 0, exploding())
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []
    assert writer.completed_record("train", 0) is None
    record = writer.write_shard("train", 0, [make_sample("a")])
    assert writer.completed_record("train", 0) == record


def test_row_groups_are_cut_by_bytes(tmp_path: Path, spec) -> None:
    per_row = sum(len(v.data) for v in make_sample("q").images.values())
    _write_set(str(tmp_path), spec, n_train=8, rows_per_shard=8, row_group_bytes=int(per_row * 2.5))
    parquet = pq.ParquetFile(tmp_path / "train" / "part-00000.parquet")
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert sizes == [2, 2, 2, 2]  # a group closes before the row that would take it past the target


def test_schema_metadata_and_pyarrow_dataset(shard_root: Path, spec) -> None:
    schema = pq.read_schema(shard_root / "train" / "part-00000.parquet")
    meta = json.loads(schema.metadata[b"diffx"])
    assert meta["dataset"]["modalities"][2] == spec.modalities[2].model_dump()
    assert meta["dataset"]["classes"] == list(spec.classes)
    dataset = pads.dataset(str(shard_root), format="parquet")  # '_' and '.' files are ignored
    assert dataset.count_rows() == 13
    assert ShardSet(str(shard_root)).arrow_dataset("val").count_rows() == 3


def test_huggingface_datasets_decodes_images(shard_root: Path) -> None:
    datasets = pytest.importorskip("datasets")
    shard_set = ShardSet(str(shard_root))
    cache = str(shard_root.parent / "hf-cache")
    assert set(shard_set.data_files()) == {"train", "val"}
    ds = datasets.load_dataset("parquet", data_files=shard_set.data_files("train"), split="train", cache_dir=cache)
    row = ds[0]
    assert row["rgb"].mode == "RGB" and row["depth"].mode == "I;16" and row["thermal"].mode == "L"
    assert row["objects"][0] == {
        "bbox": [1.0, 2.0, 10.0, 12.0],
        "category": "car",
        "category_id": 2,
        **dict.fromkeys(("iscrowd", "difficult", "truncated", "occlusion")),  # the source said nothing of them
    }
    # the shard-set folder as it is: the per-shard sidecar records next to the shards are not read as Parquet
    whole = datasets.load_dataset("parquet", data_dir=str(shard_root), cache_dir=cache)
    assert {name: len(split) for name, split in whole.items()} == {"train": 10, "validation": 3}  # val: validation


def test_torch_dataset_and_loader(shard_root: Path) -> None:
    dataset = ShardDataset(str(shard_root), split="train")
    assert len(dataset) == 10
    item = dataset[5]
    assert item["id"] == "t5"
    assert item["images"]["rgb"].shape == (3, 32, 40) and item["images"]["depth"].shape == (1, 32, 40)
    expected = make_sample("t5", seed=5).images["depth"].to_array() / 65535.0
    np.testing.assert_allclose(item["images"]["depth"][0].numpy(), expected, rtol=1e-6)
    assert item["boxes"].shape == (2, 4) and item["labels"].tolist() == [2, 0]
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=detection_collate)
    batches = list(loader)
    assert [len(b["id"]) for b in batches] == [4, 4, 2]
    assert batches[0]["images"]["thermal"].shape == (4, 1, 32, 40)
    with pytest.raises(IndexError):
        dataset[10]


def test_decoded_rows_are_cached_within_the_budget_and_items_are_unchanged(shard_root: Path) -> None:
    import pickle

    from diffx.train.data import sample_generator

    cached = ShardDataset(str(shard_root), split="train")
    fresh = ShardDataset(str(shard_root), split="train", decode_cache_bytes=0)
    order = [7, 2, 9, 2, 0, 7, 5, 9, 1, 2]  # shards visited out of order, rows read again
    for position, index in enumerate(order):
        a = cached.item(index, sample_generator(0, position))
        b = fresh.item(index, sample_generator(0, position))
        assert a["id"] == b["id"] and a["caption"] == b["caption"] and a["placement"] == b["placement"]
        assert all(torch.equal(a["images"][m], b["images"][m]) for m in b["images"])
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    assert set(cached._decoded) == set(order) and not fresh._decoded
    one_row = cached.decoded_row(0).nbytes
    bounded = ShardDataset(str(shard_root), split="train", decode_cache_bytes=3 * one_row)
    for index in range(10):
        bounded.item(index)
    assert len(bounded._decoded) == 3 and bounded._decoded_bytes <= 3 * one_row  # the rest decoded each read
    assert not bounded.decoded_row(0).arrays["rgb"].flags.writeable  # a shared cached array cannot be changed
    assert pickle.loads(pickle.dumps(cached))._decoded == {}  # a DataLoader worker starts with its own


def test_export_coco_and_yolo(shard_root: Path, tmp_path: Path) -> None:
    counts = export_coco(str(shard_root), str(tmp_path / "coco"))
    assert counts == {"train": 10, "val": 3}
    coco = json.loads((tmp_path / "coco" / "annotations" / "train.json").read_text())
    assert coco["annotations"][0]["bbox"] == [1.0, 2.0, 9.0, 10.0] and coco["annotations"][0]["category_id"] == 3
    assert (tmp_path / "coco" / "images" / "thermal" / coco["images"][0]["file_name"]).is_file()
    counts = export_yolo(str(shard_root), str(tmp_path / "yolo"), split="val")
    assert counts == {"val": 3}
    label = (tmp_path / "yolo" / "rgb" / "labels" / "val" / "v0.txt").read_text().splitlines()
    assert label[0] == "2 0.137500 0.218750 0.225000 0.312500"
    assert "names:\n  0: person" in (tmp_path / "yolo" / "depth" / "data.yaml").read_text()


def test_export_refuses_a_folder_with_files_unless_overwrite(shard_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    export_coco(str(shard_root), str(out), "val")
    stray = out / "images" / "rgb" / "val" / "stray.png"
    stray.write_bytes(b"not ours")
    with pytest.raises(DataError, match=r"not empty.*--overwrite"):
        export_coco(str(shard_root), str(out), "train")
    assert stray.exists() and not (out / "annotations" / "train.json").exists()  # nothing merged, nothing lost
    assert export_coco(str(shard_root), str(out), "train", overwrite=True) == {"train": 10}
    assert not stray.exists() and not (out / "annotations" / "val.json").exists()  # the old export is gone


def test_yolo_export_takes_val_from_the_real_set(shard_root: Path, tmp_path: Path, spec) -> None:
    synthetic = tmp_path / "synthetic"
    writer = ShardSetWriter(str(synthetic), spec, generated=True)
    writer.finalize(writer.write_split("train", (make_sample(f"g{i}", seed=50 + i) for i in range(4)), 4))
    counts = export_yolo(str(synthetic), str(tmp_path / "yolo"), val_from=str(shard_root))
    assert counts == {"train": 4, "val": 3}
    data_yaml = (tmp_path / "yolo" / "thermal" / "data.yaml").read_text()
    assert "train: images/train" in data_yaml and "val: images/val" in data_yaml
    assert sorted(p.stem for p in (tmp_path / "yolo" / "rgb" / "images" / "val").iterdir()) == ["v0", "v1", "v2"]
    with pytest.raises(DataError, match="no rows in split 'test'"):
        export_yolo(str(synthetic), str(tmp_path / "yolo2"), val_from=str(shard_root), val_split="test")


def test_fsspec_remote_protocol(spec) -> None:
    """The same code writes and validates through a non-local fsspec filesystem."""
    root = "memory://diffx-test/shards"
    _write_set(root, spec, n_train=5, n_val=2)
    report = validate_shard_set(root)
    assert report.ok, report.problems
    assert [s.id for s in ShardSet(root).iter_samples("val")] == ["v0", "v1"]

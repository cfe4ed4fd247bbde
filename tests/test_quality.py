"""Quality gates catch planted defects, name the rows, and pass clean data."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffx.data.demo import write_demo
from diffx.data.images import encode_png
from diffx.data.sample import BoxObject, Sample
from diffx.errors import DataError
from diffx.quality.gate import GateFailed
from diffx.shards.manifest import MANIFEST_NAME
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages import check, ingest

from .conftest import gate_config as _config
from .conftest import make_config


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Validated canonical shards from 24 + 4 demo scenes (the real ingest path)."""
    tmp = tmp_path_factory.mktemp("quality")
    write_demo(str(tmp / "raw"), seed=11, width=64, height=48, splits={"train": 24, "val": 4})
    config = make_config(tmp / "raw", tmp / "canonical")
    ingest.run(config, progress=False)
    return tmp / "canonical"


def _samples(root: Path) -> list[Sample]:
    return list(ShardSet(str(root)).iter_samples())


def _write(samples: list[Sample], root: Path, spec: Any) -> Path:
    writer = ShardSetWriter(str(root), spec)
    records = []
    for split in sorted({s.split for s in samples}):
        records += writer.write_split(split, [s for s in samples if s.split == split], 8)
    writer.finalize(records)
    return root


def _failures(tmp: Path, gate: str) -> dict[str, dict[str, Any]]:
    report = json.loads((tmp / "reports" / f"{gate}.json").read_text())
    return {f"{f['expectation']}:{f['column']}": f for f in report["failures"]}


def _grey(sample: Sample, name: str, array: np.ndarray) -> Sample:
    return dataclasses.replace(sample, images={**sample.images, name: encode_png(array, f"{sample.id}-{name}", 1)})


def _boxes(sample: Sample, *boxes: tuple[str, tuple[float, float, float, float], int]) -> Sample:
    return dataclasses.replace(sample, objects=[BoxObject(b, c, i) for c, b, i in boxes])


# defect -> (how to plant it on one sample, the expectation that must fail "type:column")
DEFECTS: dict[str, tuple[Callable[[Sample], Sample], str]] = {
    "blank thermal": (
        lambda s: _grey(s, "thermal", np.full((s.height, s.width), 90, np.uint8)),
        "expect_column_values_to_be_between:thermal_std",
    ),
    "depth all zeros": (
        lambda s: _grey(s, "depth", np.zeros((s.height, s.width), np.uint16)),
        "expect_column_values_to_be_between:depth_nonzero",
    ),
    "rgb/thermal size mismatch": (
        lambda s: _grey(
            s, "thermal", np.full((s.height // 2, s.width // 2), 9, np.uint8) + np.arange(s.width // 2, dtype=np.uint8)
        ),
        "expect_column_values_to_be_in_set:thermal_size_ok",
    ),
    "thermal stored as 16-bit": (
        lambda s: _grey(s, "thermal", s.images["thermal"].to_array().astype(np.uint16) * 257),
        "expect_column_values_to_be_in_set:thermal_mode_ok",
    ),
    "corrupt rgb bytes": (
        lambda s: dataclasses.replace(
            s,
            images={
                **s.images,
                "rgb": dataclasses.replace(
                    s.images["rgb"], data=s.images["rgb"].data[: len(s.images["rgb"].data) // 2]
                ),
            },
        ),
        "expect_column_values_to_be_in_set:rgb_decodable",
    ),
    "thermal far from real": (
        lambda s: _grey(s, "thermal", 255 - s.images["thermal"].to_array()),
        "expect_column_values_to_be_between:thermal_hist_distance",
    ),
    "box outside": (
        lambda s: _boxes(s, ("car", (50.0, 10.0, 80.0, 30.0), 2)),
        "expect_column_values_to_be_in_set:boxes_inside",
    ),
    "inverted box": (
        lambda s: _boxes(s, ("car", (30.0, 10.0, 20.0, 30.0), 2)),
        "expect_column_values_to_be_in_set:boxes_ordered",
    ),
    "NaN box": (
        lambda s: _boxes(s, ("car", (math.nan, 10.0, 20.0, 30.0), 2)),
        "expect_column_values_to_be_in_set:boxes_finite",
    ),
    "wrong class": (
        lambda s: _boxes(s, ("truck", (1.0, 1.0, 20.0, 20.0), 7)),
        "expect_column_values_to_be_in_set:classes_known",
    ),
    "too many objects": (
        lambda s: _boxes(s, *[("person", (float(i), 1.0, i + 3.0, 9.0), 0) for i in range(31)]),
        "expect_column_values_to_be_between:n_objects",
    ),
    "tiny box": (
        lambda s: _boxes(s, ("person", (5.0, 5.0, 6.0, 6.0), 0)),
        "expect_column_values_to_be_between:min_box_area",
    ),
    "extreme aspect": (
        lambda s: _boxes(s, ("person", (5.0, 0.0, 7.0, 48.0), 0)),
        "expect_column_values_to_be_between:max_box_aspect",
    ),
}


def test_clean_data_passes_every_gate_expectation(tmp_path: Path, clean: Path) -> None:
    report = check.run("ingest", _config(tmp_path, clean, **{"quality.docs": str(tmp_path / "docs")}))
    assert report.success and report.rows == 28 and len(report.outcomes) >= 30
    assert (tmp_path / "docs" / "index.html").is_file()  # great_expectations data docs
    saved = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert saved["success"] and set(saved["reference_histograms"]) == {"thermal", "depth"}
    check.run("ingest", _config(tmp_path, clean))
    assert (tmp_path / "reports" / "ingest.json").read_text() != ""  # rerun: same bytes below
    assert json.loads((tmp_path / "reports" / "ingest.json").read_text()) == saved


def test_each_planted_defect_fails_its_expectation_on_its_row(tmp_path: Path, clean: Path) -> None:
    samples = _samples(clean)
    train = [s for s in samples if s.split == "train"]
    planted: dict[str, str] = {}
    for (name, (plant, _)), victim in zip(DEFECTS.items(), train, strict=False):
        samples[samples.index(victim)] = plant(victim)
        planted[name] = victim.id
    spare = [s for s in train if s.id not in planted.values()]
    mirrored = encode_png(np.ascontiguousarray(spare[0].images["rgb"].to_array()[:, ::-1]), "mirror", 1)
    samples.append(dataclasses.replace(spare[0], split="val", images={**spare[0].images, "rgb": mirrored}))  # dup id
    samples.append(dataclasses.replace(spare[1], id="copy-of-" + spare[1].id))  # duplicate content
    bad = _write(samples, tmp_path / "bad", ShardSet(str(clean)).spec)
    with pytest.raises(GateFailed, match=r"quality gate 'ingest' failed") as caught:
        check.run("ingest", _config(tmp_path, bad))
    failures = _failures(tmp_path, "ingest")
    for name, (_, key) in DEFECTS.items():
        assert key in failures, f"{name}: {key} did not fail; failures: {sorted(failures)}"
        ids = {row["id"] for row in failures[key]["rows"]}
        assert planted[name] in ids, f"{name}: row {planted[name]} not named, got {ids}"
    assert {r["id"] for r in failures["expect_column_values_to_be_unique:id"]["rows"]} == {spare[0].id}
    assert {r["id"] for r in failures["expect_column_values_to_be_unique:content_hash"]["rows"]} == {
        spare[1].id,
        "copy-of-" + spare[1].id,
    }
    assert "observed=" in str(caught.value) and "thermal_std" in str(caught.value)
    assert len(DEFECTS) + 2 >= 15


@pytest.mark.parametrize(
    "damage, key",
    [
        ("truncate", "expect_column_values_to_be_in_set:bytes_ok"),
        ("flip-byte", "expect_column_values_to_be_in_set:sha256_ok"),
        ("manifest-rows", "expect_column_pair_values_to_be_equal:rows_actual vs rows_manifest"),
    ],
)
def test_shard_level_defects(tmp_path: Path, clean: Path, damage: str, key: str) -> None:
    root = _write(_samples(clean), tmp_path / "set", ShardSet(str(clean)).spec)
    shard = root / "train" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[: len(data) - 100]))
    elif damage == "flip-byte":
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    else:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        manifest["shards"][1]["rows"] += 1
        (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(GateFailed):
        check.run("ingest", _config(tmp_path, root))
    failures = _failures(tmp_path, "ingest")
    assert key in failures
    assert failures[key]["rows"][0]["shard"] == "train/part-00001.parquet"


def test_caption_gate(tmp_path: Path, clean: Path) -> None:
    samples = [
        dataclasses.replace(
            s, caption=f"An image of a street with {len(s.objects)} objects at dusk.", caption_source="template"
        )
        for s in _samples(clean)
    ]
    spec = ShardSet(str(clean)).spec
    good = _write(samples, tmp_path / "good", spec)
    assert check.run("captions", _config(tmp_path, clean), str(good)).success
    samples[0] = dataclasses.replace(samples[0], caption="   ")
    samples[1] = dataclasses.replace(samples[1], caption="An image of a car. " * 80)
    samples[2] = dataclasses.replace(samples[2], caption=None, caption_source=None)
    samples[3] = dataclasses.replace(samples[3], caption_source="unknown-backend")
    bad = _write(samples, tmp_path / "bad", spec)
    with pytest.raises(GateFailed):
        check.run("captions", _config(tmp_path, clean), str(bad))
    failures = _failures(tmp_path, "captions")
    expect = {
        "expect_column_values_to_be_in_set:caption_blank": samples[0].id,
        "expect_column_values_to_be_between:caption_tokens": samples[1].id,
        "expect_column_values_to_be_in_set:caption_present": samples[2].id,
        "expect_column_values_to_match_regex:caption_source": samples[3].id,
    }
    for key, sample_id in expect.items():
        assert key in failures and sample_id in {r["id"] for r in failures[key]["rows"]}, key
    over = next(r for r in failures["expect_column_values_to_be_between:caption_tokens"]["rows"])
    assert over["observed"] > 248


def test_vae_gate_psnr_floor(tmp_path: Path, clean: Path) -> None:
    metrics = tmp_path / "vae.json"
    metrics.write_text(
        json.dumps(
            {
                "val": {
                    "rgb": {"psnr": 21.0, "ssim": 0.6, "baseline_psnr": 20.0},
                    "thermal": {"psnr": 12.5, "ssim": 0.5, "baseline_psnr": 11.0},
                    "depth": {"psnr": 22.0, "ssim": 0.6, "baseline_psnr": 21.5},
                }
            }
        )
    )
    config = _config(tmp_path, clean, **{"vae.metrics": str(metrics)})
    with pytest.raises(GateFailed, match=r"modality=thermal, observed=\[12.5, 15.0\]"):
        check.run("vae", config)
    config = _config(tmp_path, clean, **{"vae.metrics": str(metrics), "quality.vae.min_psnr": {"thermal": 12.0}})
    assert check.run("vae", config).success
    with pytest.raises(DataError, match="run train_vae first"):
        check.run("vae", _config(tmp_path, clean, **{"vae.metrics": str(tmp_path / "none.json")}))


def test_vae_gate_judges_against_the_latent_resolution_baseline(tmp_path: Path, clean: Path) -> None:
    """Dark, flat scenes: a blurry model clears a fixed 15 dB floor, but not the blur of the same frames."""
    metrics = tmp_path / "vae.json"
    val = {
        "rgb": {"psnr": 19.4, "ssim": 0.5, "baseline_psnr": 27.3},
        "thermal": {"psnr": 31.0, "ssim": 0.8, "baseline_psnr": 29.0},
    }
    metrics.write_text(json.dumps({"val": val}))
    config = _config(tmp_path, clean, **{"vae.metrics": str(metrics)})
    with pytest.raises(GateFailed, match=r"modality=rgb, observed=\[19.4, 26.3\]"):
        check.run("vae", config)
    failures = _failures(tmp_path, "vae")
    assert len(failures) == 1 and "blur" in next(iter(failures.values()))["why"], failures
    with pytest.raises(GateFailed, match=r"modality=thermal, observed=\[31.0, 32.0\]"):  # a 3 dB margin
        check.run(
            "vae",
            _config(tmp_path, clean, **{"vae.metrics": str(metrics), "quality.vae.min_gain_over_baseline_db": 3.0}),
        )
    relaxed = {"vae.metrics": str(metrics), "quality.vae.min_gain_over_baseline_db": -8.0}
    assert check.run("vae", _config(tmp_path, clean, **relaxed)).success
    metrics.write_text(json.dumps({"val": {"rgb": {"psnr": 30.0, "ssim": 0.9}}}))  # written before baselines
    with pytest.raises(DataError, match="baseline_psnr missing"):
        check.run("vae", config)
    fixed_floors_only = {"vae.metrics": str(metrics), "quality.vae.min_gain_over_baseline_db": None}
    assert check.run("vae", _config(tmp_path, clean, **fixed_floors_only)).success


def _as_generated(samples: list[Sample], root: Path, spec: Any) -> Path:
    writer = ShardSetWriter(str(root), spec, generated=True)
    provenance = {"seed": 1, "source_id": "x", "model_id": "m", "sampler": "ddim", "steps": 2, "guidance": 3.0}
    rows = [dataclasses.replace(s, split="train", id=f"gen-{i}", provenance=provenance) for i, s in enumerate(samples)]
    writer.finalize(writer.write_split("train", rows, 8))
    return root


def test_generated_gate_compares_with_the_real_data(tmp_path: Path, clean: Path) -> None:
    config = _config(tmp_path, clean, **{"quality.generated.reference": str(tmp_path / "reports" / "ingest.json")})
    check.run("ingest", config)  # the real data's references
    samples = _samples(clean)
    good = _as_generated(samples, tmp_path / "good", ShardSet(str(clean)).spec)
    report = check.run("generated", config, str(good))
    assert report.success and report.extra["honoured_share"]["thermal_box_contrast"] > 0.5
    inverted = [_grey(s, "thermal", 255 - s.images["thermal"].to_array()) for s in samples]
    bad = _as_generated(inverted, tmp_path / "bad", ShardSet(str(clean)).spec)
    with pytest.raises(GateFailed):
        check.run("generated", config, str(bad))
    failures = _failures(tmp_path, "generated")
    for key in (
        "expect_column_mean_to_be_between:thermal_mean",
        "expect_column_values_to_be_between:thermal_hist_distance",
        "expect_column_values_to_be_between:thermal_box_contrast",
    ):
        assert key in failures, sorted(failures)

"""What a new user met (issue #39) that the bad-input suite (test_bad_inputs.py) does not run through a whole
working directory: object attributes kept from the source, images Pillow reads its own way, the dry run's
accounting, exports that Ultralytics reads from anywhere, and the gates on defects planted in the demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from diffx.caption.rules import check_foreign_objects, refine_caption
from diffx.config import VocPairsSource, parse_config
from diffx.data.demo import write_demo
from diffx.data.images import load_modality_file, set_max_pixels
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.errors import ConfigError, DataError
from diffx.quality.gate import GateFailed
from diffx.shards.export import export_coco, export_yolo, yolo_warnings
from diffx.shards.reader import ShardSet
from diffx.shards.schema import row_to_sample, sample_to_row
from diffx.stages import STAGE_PATHS, check, ingest, output_conflicts
from diffx.stages.survey import survey

from .conftest import DEMO_SPEC, gate_config, make_config, read_validated

RT = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=("person", "car"),
)
RNG = np.random.default_rng(3)


def _png(path: Path, array: np.ndarray, **save: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)


def _voc_root(root: Path, objects: dict[str, str], images: tuple[str, ...]) -> VocPairsSource:
    """VOC pairs: an XML per id (objects given as raw <object> XML), a PNG pair per id in ``images``."""
    for sid, body in objects.items():
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{sid}.xml").write_text(
            f"<annotation><size><width>32</width><height>24</height></size>{body}</annotation>"
        )
    for sid in images:
        _png(root / "visible" / f"{sid}.png", RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        _png(root / "infrared" / f"{sid}.png", RNG.integers(0, 255, (24, 32), dtype=np.uint8))
    return VocPairsSource(root=str(root), modalities={"rgb": "visible", "thermal": "infrared"}, extension=".png")


def _voc_object(name: str, box: tuple[int, int, int, int], **flags: int) -> str:
    tags = "".join(f"<{k}>{v}</{k}>" for k, v in flags.items())
    x0, y0, x1, y1 = box
    return (
        f"<object><name>{name}</name>{tags}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
    )


# ------------------------------------------------------------------------------------------ object attributes
def test_voc_difficult_and_truncated_are_kept_and_survive_the_shards(tmp_path: Path) -> None:
    source = _voc_root(
        tmp_path,
        {"a": _voc_object("person", (2, 2, 10, 20), difficult=1, truncated=0) + _voc_object("car", (12, 3, 30, 20))},
        ("a",),
    )
    (sample,), rejected = read_validated(source, RT)
    assert not rejected
    first, second = sample.objects
    assert (first.difficult, first.truncated, first.iscrowd, first.occlusion) == (True, False, None, None)
    assert (second.difficult, second.truncated) == (None, None)  # the source says nothing: null, not False
    back = row_to_sample(sample_to_row(sample, RT), RT)
    assert back.objects == sample.objects
    from diffx.shards.writer import ShardSetWriter

    writer = ShardSetWriter(str(tmp_path / "shards"), RT)
    writer.finalize(writer.write_split("train", iter([sample]), 1))
    export_coco(str(tmp_path / "shards"), str(tmp_path / "coco"))
    first, second = json.loads((tmp_path / "coco" / "annotations" / "train.json").read_text())["annotations"]
    assert first["difficult"] is True and first["truncated"] is False and first["ignore"] == 1
    assert "ignore" not in second and "difficult" not in second and first["iscrowd"] == second["iscrowd"] == 0


def test_a_voc_flag_that_is_not_0_or_1_names_the_object(tmp_path: Path) -> None:
    source = _voc_root(tmp_path, {"a": _voc_object("person", (2, 2, 10, 20), difficult=2)}, ("a",))
    _, (rejected,) = read_validated(source, RT)
    assert "a.xml [object[0]]: <difficult> must be 0 or 1, got '2'" in rejected.reason


def test_coco_iscrowd_and_kaist_occlusion_are_kept(tmp_path: Path, demo_root: Path, kaist_root: Path) -> None:
    from diffx.config import KaistSource

    raw = tmp_path / "demo"
    shutil.copytree(demo_root, raw)
    coco = json.loads((raw / "annotations" / "train.json").read_text())
    coco["annotations"][0]["iscrowd"] = 1
    (raw / "annotations" / "train.json").write_text(json.dumps(coco))
    config = make_config(raw, tmp_path / "canonical")
    ingest.run(config, progress=False)
    objects = [o for s in ShardSet(str(tmp_path / "canonical")).iter_samples("train") for o in s.objects]
    assert [o.iscrowd for o in objects].count(True) == 1 and all(o.iscrowd is not None for o in objects)
    export_coco(str(tmp_path / "canonical"), str(tmp_path / "coco"))
    exported = json.loads((tmp_path / "coco" / "annotations" / "train.json").read_text())["annotations"]
    assert sum(a["iscrowd"] for a in exported) == 1  # what COCO tools read to ignore the crowd box

    kaist = KaistSource(root=str(kaist_root), category_map={"cyclist": "person"}, drop_ignored=True)
    samples, _ = read_validated(kaist, RT, {"thermal": "mean"})
    occluded = [o.occlusion for s in samples for o in s.objects]
    assert occluded and set(occluded) == {0}  # the fixture's bbGt lines say occ 0


# ------------------------------------------------------------------------------------ images as Pillow reads them
def test_a_palette_png_is_its_colours_not_four_channels(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    path = tmp_path / "p.png"
    Image.fromarray(rgb).quantize(16).save(path)
    assert Image.open(path).mode == "P"
    image = load_modality_file(str(path), RT.modality("rgb"))
    assert image.mode == "RGB"
    grey = tmp_path / "grey-palette.png"
    Image.fromarray(RNG.integers(0, 255, (24, 32), dtype=np.uint8)).convert("P").save(grey)
    assert load_modality_file(str(grey), RT.modality("thermal")).mode == "L"  # grey palette -> 1 channel
    clear = tmp_path / "transparent.png"
    Image.fromarray(rgb).quantize(16).save(clear, transparency=0)
    with pytest.raises(DataError, match="4-channel"):
        load_modality_file(str(clear), RT.modality("rgb"))


def test_the_pixel_limit_is_a_setting_and_quarantines(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _png(path, RNG.integers(0, 255, (40, 50), dtype=np.uint8))
    set_max_pixels(1000)
    try:
        with pytest.raises(DataError, match=r"claims 50 x 40 pixels, over ingest.max_image_pixels \(1000\)"):
            load_modality_file(str(path), RT.modality("thermal"))
    finally:
        set_max_pixels(1 << 28)
    assert load_modality_file(str(path), RT.modality("thermal")).size == (50, 40)


def test_an_extension_without_its_dot_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"ingest.source.extension: .*with its dot, e.g. '.png'"):
        parse_config({"ingest": {"source": {"format": "voc_pairs", "root": "x", "modalities": {}, "extension": "png"}}})


# ------------------------------------------------------------------------------------------------ the dry run
def test_the_dry_run_counts_labels_without_images_and_spares_a_quarantined_samples_partner(tmp_path: Path) -> None:
    person = _voc_object("person", (2, 2, 10, 20))
    source = _voc_root(tmp_path, {"a": person, "b": person, "c": person, "gone": person}, ("a", "b", "c"))
    (tmp_path / "infrared" / "c.png").write_bytes(b"broken")  # c is quarantined; its visible image is not unused
    raw = {
        "data": {"modalities": [m.model_dump() for m in RT.modalities], "classes": list(RT.classes)},
        "ingest": {"source": source.model_dump(), "max_quarantine_fraction": 1.0},
    }
    config = parse_config(raw)
    report = survey(config.data, config.ingest, config.shards)
    assert report["would_quarantine"] == 1 and report["samples"] == 2
    assert report["annotations_without_sample"] == 1
    assert report["annotations_without_sample_examples"] == ["Annotations/gone.xml"]
    assert report["unmatched_image_files"] == 0  # c's visible image belongs to a quarantined sample, not to none
    assert report["would_fail"] is None
    config = parse_config({**raw, "ingest": {**raw["ingest"], "max_quarantine_fraction": 0.1}})
    assert "quarantined" in survey(config.data, config.ingest, config.shards)["would_fail"]


# ------------------------------------------------------------------------------------------- outputs vs inputs
def test_the_default_outputs_never_collide_and_every_stage_is_guarded() -> None:
    config = parse_config({})
    assert output_conflicts(config) == []
    assert set(STAGE_PATHS) == {
        "ingest",
        "caption",
        "refine",
        "train_vae",
        "train_unet",
        "plan",
        "generate",
        "curate",
        "evaluate",
    }
    clash = parse_config({"vae": {"report": "metrics/vae.json"}})
    assert output_conflicts(clash) == [
        "vae.metrics (metrics/vae.json) is the same path as vae.report (metrics/vae.json)"
    ]


# --------------------------------------------------------------------------------------------- YOLO exports
def _train_test_set(tmp_path: Path, demo_root: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(demo_root, raw)
    (raw / "annotations" / "val.json").rename(raw / "annotations" / "test.json")
    config = make_config(raw, tmp_path / "canonical")
    source = config.ingest.source.model_dump()
    source["annotations"] = {"train": "annotations/train.json", "test": "annotations/test.json"}
    config = make_config(raw, tmp_path / "canonical", **{"ingest.source": source})
    ingest.run(config, progress=False)
    return tmp_path / "canonical"


def test_yolo_data_yaml_has_no_path_and_validates_on_the_held_out_split(tmp_path: Path, demo_root: Path) -> None:
    root = _train_test_set(tmp_path, demo_root)
    counts = export_yolo(str(root), str(tmp_path / "plain"))
    assert set(counts) == {"train", "test"}
    (warning,) = yolo_warnings(str(root), counts, "val", None)
    assert "--val-split test" in warning  # the hint that works on a train/test release, not --val-from
    counts = export_yolo(str(root), str(tmp_path / "yolo"), val_split="test")
    assert yolo_warnings(str(root), counts, "test", None) == []
    data = yaml.safe_load((tmp_path / "yolo" / "rgb" / "data.yaml").read_text())
    assert "path" not in data  # Ultralytics then reads the splits against the yaml's own folder
    assert data["train"] == "images/train" and data["val"] == "images/test" and data["test"] == "images/test"
    only_test = export_yolo(str(root), str(tmp_path / "test-only"), split="test")
    assert any("no train split" in w for w in yolo_warnings(str(root), only_test, "val", None))
    with pytest.raises(DataError, match=r"no rows in that split \(it has test: --val-split test\)"):
        export_yolo(str(root), str(tmp_path / "bad"), val_split="val2")


ULTRALYTICS_CHECK = """
import sys
from ultralytics.data.utils import check_det_dataset
data = check_det_dataset(sys.argv[1])
print(data["train"]); print(data["val"])
"""


def _ultralytics_python() -> str | None:
    """This interpreter when it has Ultralytics, else $DIFFX_ULTRALYTICS_PYTHON (an environment with it)."""
    try:
        import ultralytics  # noqa: F401

        return sys.executable
    except ImportError:
        return os.environ.get("DIFFX_ULTRALYTICS_PYTHON")


def _moved_export(tmp_path: Path, demo_root: Path) -> tuple[str, Path, dict[str, str]]:
    """An export moved after it was written, a working directory apart from it, and an offline environment."""
    root = _train_test_set(tmp_path, demo_root)
    export_yolo(str(root), str(tmp_path / "export"), val_split="test")
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "export", moved)
    other = tmp_path / "another-working-dir"
    other.mkdir()
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "ycfg")}
    return str(moved / "thermal" / "data.yaml"), other, env


@pytest.mark.slow  # imports Ultralytics
def test_ultralytics_resolves_the_export_from_another_folder_after_a_move(tmp_path: Path, demo_root: Path) -> None:
    """Ultralytics' own dataset resolver (check_det_dataset), not a copy of its rule."""
    python = _ultralytics_python()
    if python is None:
        pytest.skip("Ultralytics is not installed (set DIFFX_ULTRALYTICS_PYTHON to an environment with it)")
    yaml_path, other, env = _moved_export(tmp_path, demo_root)
    found = subprocess.run(
        [python, "-c", ULTRALYTICS_CHECK, yaml_path], cwd=other, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr[-2000:]
    train, val = found.stdout.strip().splitlines()[-2:]
    folder = Path(yaml_path).parent
    assert train == str(folder / "images" / "train") and val == str(folder / "images" / "test")


@pytest.mark.slow  # trains YOLOv8n for one epoch on CPU
def test_ultralytics_trains_on_the_export_from_another_folder(tmp_path: Path, demo_root: Path) -> None:
    python = _ultralytics_python()
    if python is None:
        pytest.skip("Ultralytics is not installed (set DIFFX_ULTRALYTICS_PYTHON to an environment with it)")
    probe = subprocess.run([python, "-c", "import torchvision.ops"], capture_output=True, text=True)
    if probe.returncode != 0:  # PyPI's torchvision for the pinned CPU torch may not load its operators
        pytest.skip(f"torchvision does not load in that environment: {probe.stderr.strip().splitlines()[-1]}")
    yaml_path, other, env = _moved_export(tmp_path, demo_root)
    script = (
        "import sys; from ultralytics import YOLO; YOLO('yolov8n.yaml').train(data=sys.argv[1], epochs=1, imgsz=64, "
        "batch=4, workers=0, device='cpu', plots=False, amp=False, project=sys.argv[2])"
    )
    trained = subprocess.run(
        [python, "-c", script, yaml_path, str(tmp_path / "runs")],
        cwd=other,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]


# ------------------------------------------------------------------------------------- gates on planted defects
def _bgr(path: Path) -> None:
    array = np.asarray(Image.open(path))
    Image.fromarray(np.ascontiguousarray(array[..., ::-1])).save(path)


def _planted_demo(tmp_path: Path, plant: str) -> Path:
    raw = tmp_path / "raw"
    write_demo(str(raw), seed=5, width=96, height=64, splits={"train": 30, "val": 6})
    if plant == "bgr one":
        _bgr(raw / "rgb" / "demo-train-00004.png")
    elif plant == "bgr all":
        for path in (raw / "rgb").iterdir():
            _bgr(path)
    elif plant == "salt":
        path = raw / "thermal" / "demo-train-00007.png"
        array = np.asarray(Image.open(path)).copy()
        array[np.random.default_rng(0).random(array.shape) < 0.05] = 255
        Image.fromarray(array).save(path)
    elif plant == "relabelled":
        val = json.loads((raw / "annotations" / "val.json").read_text())
        train = json.loads((raw / "annotations" / "train.json").read_text())
        image = val["images"].pop(2)
        moved = [a for a in val["annotations"] if a["image_id"] == image["id"]]
        val["annotations"] = [a for a in val["annotations"] if a["image_id"] != image["id"]]
        image["id"] = 1000
        train["images"].append(image)
        train["annotations"] += [{**a, "image_id": 1000, "id": 1000 + i} for i, a in enumerate(moved)]
        (raw / "annotations" / "val.json").write_text(json.dumps(val))
        (raw / "annotations" / "train.json").write_text(json.dumps(train))
    return raw


@pytest.mark.parametrize(
    ("plant", "column"),
    [
        ("clean", None),
        ("bgr one", "rgb_channel_swap"),
        ("salt", "thermal_impulse"),
        ("relabelled", "id_names_split"),
        ("bgr all", None),  # no evidence inside the set: README, Quality gates, says why
    ],
)
def test_the_ingest_gate_on_planted_defects(tmp_path: Path, plant: str, column: str | None) -> None:
    raw = _planted_demo(tmp_path, plant)
    config = gate_config(tmp_path, tmp_path / "canonical", **{"ingest.source.root": str(raw)})
    ingest.run(config, progress=False)
    if column is None:
        assert check.run("ingest", config).success
        return
    with pytest.raises(GateFailed) as failed:
        check.run("ingest", config)
    lines = [line for line in str(failed.value).splitlines() if "FAIL" in line]
    assert len(lines) == 1 and f"samples.{column}" in lines[0], lines


def test_a_caption_counting_objects_of_no_class_is_flagged() -> None:
    classes = DEMO_SPEC.classes
    assert check_foreign_objects("An image of three zebras and a giraffe.", classes) == [
        "counts 'three zebras', which is no class of this dataset"
    ]
    assert check_foreign_objects("An image of two people and one car in a street scene.", classes) == []
    refined = refine_caption("Three zebras and a giraffe.", [], classes, 96, lambda t: len(t.split()), 77)
    assert any("zebras" in flag for flag in refined.flags)


def test_the_captions_gate_fails_on_a_caption_of_another_world(tmp_path: Path) -> None:
    from diffx.quality.stats import caption_table
    from diffx.shards.writer import ShardSetWriter

    from .conftest import make_sample

    samples = [make_sample(f"s{i}", seed=i) for i in range(4)]
    for sample in samples:
        sample.caption, sample.caption_source = "An image of one car and one person.", "template"
    samples[2].caption = "An image of three zebras and a giraffe, one car and one person."
    writer = ShardSetWriter(str(tmp_path / "captioned"), DEMO_SPEC)
    writer.finalize(writer.write_split("train", iter(samples), 4))
    table = caption_table(ShardSet(str(tmp_path / "captioned")), lambda text: len(text.split()) + 2)
    assert table["layout_conflicts"].tolist() == [0, 0, 1, 0]
    assert "three zebras" in table["conflict"][2]


def test_a_folder_another_tool_fills_is_checked_for_overlaps_only(tmp_path: Path) -> None:
    """great_expectations writes fonts and scripts into the data docs: the second gate run must not refuse them."""
    from diffx.stages import refuse_unsafe_outputs

    docs = tmp_path / "docs" / "static" / "fonts"
    docs.mkdir(parents=True)
    (docs / "HKGrotesk-Bold.otf").write_bytes(b"font")
    refuse_unsafe_outputs("check", {"data": str(tmp_path / "data")}, {"quality.docs": (str(tmp_path / "docs"), "site")})
    with pytest.raises(ConfigError, match=r"HKGrotesk-Bold.otf, which diffx does not write there"):
        refuse_unsafe_outputs("check", {}, {"evaluate.plots": (str(tmp_path / "docs"), "folder")})
    with pytest.raises(ConfigError, match=r"quality.docs .* lies inside data"):
        refuse_unsafe_outputs("check", {"data": str(tmp_path)}, {"quality.docs": (str(tmp_path / "docs"), "site")})

"""Captions: template and LMM backends, cache, refinement rules, review decisions and the review loop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from diffx.caption.decisions import Decision, append_decision, caption_digest, read_decisions
from diffx.caption.queue import read_queue
from diffx.caption.review import review
from diffx.caption.rules import near_duplicates, refine_caption
from diffx.caption.template import TemplateCaptioner
from diffx.config import DiffxConfig
from diffx.data.demo import write_demo
from diffx.data.sample import BoxObject
from diffx.errors import DataError
from diffx.models.text import token_counter
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages import caption, ingest, refine

from .conftest import DEMO_SPEC, make_config
from .tiny_models import tiny_llava


@pytest.fixture(scope="module")
def canonical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("captions")
    write_demo(str(tmp / "raw"), seed=21, width=64, height=48, splits={"train": 16, "val": 4})
    ingest.run(make_config(tmp / "raw", tmp / "canonical"), progress=False)
    return tmp / "canonical"


def _config(tmp: Path, canonical: Path, **overrides: Any) -> DiffxConfig:
    values = {
        "caption.data": str(canonical),
        "caption.output": str(tmp / "captions.parquet"),
        "caption.report": str(tmp / "caption.json"),
        "caption.cache": str(tmp / "cache.sqlite"),
        "refine.data": str(canonical),
        "refine.captions": str(tmp / "captions.parquet"),
        "refine.decisions": str(tmp / "decisions.jsonl"),
        "refine.output": str(tmp / "captioned"),
        "refine.queue": str(tmp / "queue.jsonl"),
        "refine.report": str(tmp / "refine.json"),
        **overrides,
    }
    return make_config(tmp / "raw", canonical, **values)


def _final(config: DiffxConfig) -> dict[str, tuple[str, str]]:
    return {s.id: (s.caption, s.caption_source) for s in ShardSet(config.refine.output).iter_samples()}


def _override_caption(config: DiffxConfig, sample_id: str, text: str) -> None:
    """Plant a caption in the captions table, as a bad LMM output would arrive."""
    table = pq.read_table(config.caption.output).to_pylist()
    for row in table:
        if row["id"] == sample_id:
            row["caption"] = text
    import pyarrow as pa

    from diffx.caption.table import CAPTION_SCHEMA

    pq.write_table(pa.Table.from_pylist(table, schema=CAPTION_SCHEMA), config.caption.output)


def test_template_is_deterministic_grounded_and_passes_its_own_rules(tmp_path: Path, canonical: Path) -> None:
    config = _config(tmp_path, canonical)
    first = caption.run(config, progress=False)
    assert first.rows == 20 and first.computed == 20 and first.source == "template"
    again = caption.run(config, progress=False)
    assert again.computed == 0 and again.cached == 20  # the cache answers a rerun
    result = refine.run(config)
    kinds = set(result.flag_kinds)
    assert kinds <= {"near-duplicate"}, f"the template's own captions broke a rule: {kinds}"
    for sample in ShardSet(str(canonical)).iter_samples():
        text = _final(config)[sample.id][0]
        assert text.startswith("An image of") and 2 <= text.count(".") <= 5
        for category in {o.category for o in sample.objects}:
            assert (
                category.replace("_", " ") in text
                or {"person": "people", "bicycle": "bicycles", "car": "cars"}[category] in text
            )


def test_rules_fix_and_flag(canonical: Path) -> None:
    count = token_counter("minilm")
    objects = [
        BoxObject((2.0, 10.0, 12.0, 30.0), "person", 0),
        BoxObject((40.0, 10.0, 60.0, 30.0), "car", 2),
        BoxObject((44.0, 12.0, 62.0, 28.0), "car", 2),
    ]
    classes = DEMO_SPEC.classes

    def flags(text: str) -> list[str]:
        return refine_caption(text, objects, classes, 64, count, 248).flags

    fixed = refine_caption("The image shows two cars and one person.", objects, classes, 64, count, 248)
    assert fixed.caption == "An image of two cars and one person." and fixed.fixes and not fixed.flags
    assert any("mentions 'bicycle'" in f for f in flags("An image of two cars, one person and a bicycle."))
    assert any("never mentions 'person'" in f for f in flags("An image of two cars."))
    assert any("says 'three cars'" in f for f in flags("An image of three cars and one person."))
    assert any(
        "puts a car on the left" in f for f in flags("An image of two cars and one person. A car is on the left.")
    )
    assert not flags("An image of two cars and one person. The person is on the left. A car is on the right.")
    assert any("tokens, over" in f for f in flags("An image of two cars and one person. " * 40))
    assert refine_caption("   ", objects, classes, 64, count, 248).flags == ["empty caption"]
    dupes = near_duplicates(
        {
            "a": "an image of two cars on a wet road at night",
            "b": "an image of two cars on a wet road at night",
            "c": "a person crossing a sunny street",
        },
        0.9,
    )
    assert dupes == {"b": "a"}


def test_planted_caption_is_flagged_and_a_decision_survives_reruns(tmp_path: Path, canonical: Path) -> None:
    config = _config(tmp_path, canonical)
    caption.run(config, progress=False)
    victim = next(s for s in ShardSet(str(canonical)).iter_samples() if s.objects)
    wrong = "The image shows a dog sleeping on a sofa."
    _override_caption(config, victim.id, wrong)
    refine.run(config)
    queued = {q.id: q for q in read_queue(config.refine.queue)}
    assert victim.id in queued and any("never mentions" in f for f in queued[victim.id].flags)
    edited = "An image of a quiet street with " + ", ".join(o.category for o in victim.objects) + "."
    append_decision(config.refine.decisions, Decision(victim.id, "edit", queued[victim.id].reviewed, edited, "qa"))
    refine.run(config)
    assert _final(config)[victim.id] == (edited, "human")
    assert victim.id not in {q.id for q in read_queue(config.refine.queue)}
    caption.run(config, progress=False)  # a full rerun of both stages: the edit is re-applied, not lost
    refine.run(config)
    assert _final(config)[victim.id] == (edited, "human")
    append_decision(config.refine.decisions, Decision(victim.id, "reject", "", None, "qa"))  # last decision wins
    refine.run(config)
    text, source = _final(config)[victim.id]
    assert source == "template" and text == TemplateCaptioner(DEMO_SPEC).caption(victim)


def test_accept_applies_only_to_the_caption_reviewed(tmp_path: Path, canonical: Path) -> None:
    config = _config(tmp_path, canonical)
    caption.run(config, progress=False)
    victim = next(iter(ShardSet(str(canonical)).iter_samples()))
    _override_caption(config, victim.id, "An image of a zebra.")
    refine.run(config)
    item = next(q for q in read_queue(config.refine.queue) if q.id == victim.id)
    append_decision(config.refine.decisions, Decision(victim.id, "accept", item.reviewed, None, "qa"))
    refine.run(config)
    assert _final(config)[victim.id] == ("An image of a zebra.", "template")
    _override_caption(config, victim.id, "An image of two zebras.")  # the caption changed after the review
    refine.run(config)
    item = next(q for q in read_queue(config.refine.queue) if q.id == victim.id)
    assert any("earlier version" in f for f in item.flags)


def test_empty_caption_falls_back_to_the_template(tmp_path: Path, canonical: Path) -> None:
    config = _config(tmp_path, canonical)
    caption.run(config, progress=False)
    victim = next(iter(ShardSet(str(canonical)).iter_samples()))
    _override_caption(config, victim.id, "  \n ")
    refine.run(config)
    assert _final(config)[victim.id][1] == "template" and _final(config)[victim.id][0]
    assert "empty caption" in next(q for q in read_queue(config.refine.queue) if q.id == victim.id).flags


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"decisions.jsonl:2: not valid JSON"),
        ('{"id": "no-such-id", "action": "accept"}', r"decisions.jsonl:2 \[id\]: unknown sample id 'no-such-id'"),
        ('{"id": "ID", "action": "approve"}', r"decisions.jsonl:2 \[action\]: action 'approve'"),
        ('{"id": "ID", "action": "edit", "caption": "  "}', r"decisions.jsonl:2 \[caption\]: an edit needs"),
    ],
)
def test_bad_decision_lines_name_the_line(tmp_path: Path, canonical: Path, line: str, message: str) -> None:
    config = _config(tmp_path, canonical)
    caption.run(config, progress=False)
    refine.run(config)
    before = (tmp_path / "captioned" / "_manifest.json").read_bytes()
    sample_id = next(iter(ShardSet(str(canonical)).iter_samples())).id
    good = json.dumps({"id": sample_id, "action": "accept", "reviewed": "x"})
    (tmp_path / "decisions.jsonl").write_text(good + "\n" + line.replace("ID", sample_id) + "\n")
    with pytest.raises(DataError, match=message):
        refine.run(config)
    assert (tmp_path / "captioned" / "_manifest.json").read_bytes() == before  # nothing written is lost


def test_terminal_review_appends_decisions(tmp_path: Path, canonical: Path) -> None:
    config = _config(tmp_path, canonical)
    caption.run(config, progress=False)
    ids = [s.id for s in ShardSet(str(canonical)).iter_samples()][:3]
    for sample_id, text in zip(ids, ["An image of a zebra.", "An image of a cat.", "An image of a cow."], strict=True):
        _override_caption(config, sample_id, text)
    refine.run(config)
    answers = iter(["x", "e", "An image of a quiet street.", "r", "s"])
    shown: list[str] = []
    counts = review(
        config.refine, ask=lambda _: next(answers), say=shown.append, reviewer="qa", images=tmp_path / "images"
    )
    assert counts == {"accept": 0, "edit": 1, "reject": 1, "skip": 1}
    assert any("image:" in line and line.endswith("rgb.png") for line in shown)
    assert any("please answer" in line for line in shown)
    decisions = read_decisions(config.refine.decisions)
    first, second = sorted(read_queue(config.refine.queue), key=lambda q: q.id)[:2]
    assert decisions[first.id].action == "edit" and decisions[first.id].caption == "An image of a quiet street."
    assert decisions[second.id].action == "reject" and decisions[first.id].reviewed == caption_digest(first.caption)


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


def test_lmm_backend_with_a_tiny_local_model(
    tmp_path: Path, canonical: Path, llava: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _config(
        tmp_path,
        canonical,
        **{
            "caption.backend": "lmm",
            "caption.lmm": {"model": str(llava), "device": "cpu", "batch_size": 3, "max_new_tokens": 6},
        },
    )
    result = caption.run(config, progress=False)
    assert result.source == "lmm:tiny-llava" and result.computed == 20
    table = pq.read_table(config.caption.output).to_pylist()
    assert all(row["caption_source"] == "lmm:tiny-llava" and row["caption"].strip() for row in table)
    assert caption.run(config, progress=False).computed == 0  # cached by (image, backend, model, prompt)
    prompt = dict(config.caption.lmm)  # type: ignore[arg-type]
    config2 = _config(
        tmp_path,
        canonical,
        **{
            "caption.backend": "lmm",
            "caption.lmm": {
                **{k: v for k, v in prompt.items() if v is not None},
                "prompt": "Say {layout} {modalities} {max_words}",
            },
        },
    )
    assert caption.run(config2, progress=False).computed == 20  # another prompt is another caption
    refine.run(config2)  # random-model gibberish is flagged, never silently trusted
    assert read_queue(config2.refine.queue)


def test_unreadable_image_names_the_sample(tmp_path: Path, canonical: Path) -> None:
    shard_set = ShardSet(str(canonical))
    samples = list(shard_set.iter_samples())
    broken = samples[3]
    samples[3] = dataclasses.replace(
        broken,
        images={**broken.images, "rgb": dataclasses.replace(broken.images["rgb"], data=b"\x89PNG\r\n\x1a\n garbage")},
    )
    writer = ShardSetWriter(str(tmp_path / "bad"), shard_set.spec)
    writer.finalize(
        writer.write_split("train", [s for s in samples if s.split == "train"], 8)
        + writer.write_split("val", [s for s in samples if s.split == "val"], 8)
    )
    config = _config(tmp_path, tmp_path / "bad", **{"caption.cache": None})
    with pytest.raises(DataError, match=rf"{broken.id}.*cannot decode image"):
        caption.run(config, progress=False)
    assert not (tmp_path / "captions.parquet").exists()


def test_a_caption_the_unet_would_truncate_is_flagged_by_refine_and_fails_the_gate(
    tmp_path: Path, canonical: Path
) -> None:
    """One token limit (conditioning.max_tokens, 96 here) for refine, the captions gate and the UNet: a caption of
    97-248 tokens used to pass both (they allowed Long-CLIP's 248) and was then truncated in training."""
    from diffx.quality.gate import GateFailed
    from diffx.stages import check

    config = _config(
        tmp_path,
        canonical,
        **{"quality.reports": str(tmp_path / "q"), "quality.metrics": str(tmp_path / "qm"), "quality.docs": None},
    )
    caption.run(config, progress=False)
    victim = next(ShardSet(str(canonical)).iter_samples())
    long = "An image of a wide street at dusk. " + " ".join(["A quiet lane runs past low houses."] * 12)
    tokens = token_counter("minilm")(long)
    assert 96 < tokens <= 248
    _override_caption(config, victim.id, long)
    result = refine.run(config)
    assert result.flag_kinds["tokens"] == 1
    queue = {item.id: item for item in read_queue(config.refine.queue)}
    assert any("over the text encoder's 96" in f for f in queue[victim.id].flags)
    with pytest.raises(GateFailed, match="caption_tokens"):
        check.run("captions", config)


# ------------------------------------------------------------------ captions beyond streets
def _frame(width: int, height: int, objects: list[BoxObject], spec=DEMO_SPEC, seed: int = 0):
    """A sample of flat images with warm thermal boxes, at any frame size."""
    import numpy as np

    from diffx.data.images import encode_png
    from diffx.data.sample import Sample

    rng = np.random.default_rng(seed)
    images = {}
    for modality in spec.modalities:
        if modality.channels == 3:
            array = rng.integers(120, 200, (height, width, 3), dtype=np.uint8)
        elif modality.bit_depth == 16:
            array = np.full((height, width), 5000, dtype=np.uint16)
        else:
            array = np.full((height, width), 60, dtype=np.uint8)
            for obj in objects:
                x0, y0, x1, y1 = (round(v) for v in obj.bbox)
                array[y0:y1, x0:x1] = 220
        images[modality.name] = encode_png(array, f"{modality.name}.png", 1)
    return Sample("s", "train", width, height, images, objects)


def test_scene_comes_from_the_classes_or_params_and_no_absence_is_claimed() -> None:
    from diffx.caption.scene import scene_noun
    from diffx.data.spec import DatasetSpec, ModalitySpec

    assert scene_noun(("person", "bicycle", "car")) == "street scene"
    assert scene_noun(("bed", "night_stand", "dresser", "lamp", "ottoman", "dresser_mirror")) == "indoor scene"
    assert scene_noun(("person",)) == "scene" and scene_noun(("face",)) == "face"
    assert scene_noun(("person",), "factory floor") == "factory floor"
    empty = _frame(64, 48, [])
    text = TemplateCaptioner(DEMO_SPEC).caption(empty)
    assert (
        text.startswith("An image of a street scene in daylight.") and "no people" not in text and "empty" not in text
    )
    indoor = DatasetSpec(
        modalities=(
            ModalitySpec(name="rgb", channels=3),
            ModalitySpec(name="depth", channels=1, bit_depth=16, scale=0.001),
        ),
        classes=("bed", "lamp"),
    )
    bed = BoxObject((4.0, 4.0, 40.0, 30.0), "bed", 0)
    text = TemplateCaptioner(indoor).caption(_frame(64, 48, [bed], indoor))
    assert text.startswith("An image of an indoor scene in daylight with one bed.") and "street" not in text
    assert (
        TemplateCaptioner(indoor, "bedroom").caption(_frame(64, 48, [bed], indoor)).startswith("An image of a bedroom")
    )


def test_large_frames_are_captioned_from_a_subsampled_copy_with_the_same_findings() -> None:
    person = BoxObject((300.0, 200.0, 420.0, 700.0), "person", 0)
    car = BoxObject((800.0, 500.0, 1200.0, 800.0), "car", 2)
    large = TemplateCaptioner(DEMO_SPEC).caption(_frame(1280, 1024, [person, car]))
    scaled = [BoxObject(tuple(v / 8 for v in o.bbox), o.category, o.category_id) for o in (person, car)]
    small = TemplateCaptioner(DEMO_SPEC).caption(_frame(160, 128, scaled))
    assert large == small and "warm against the cooler background" in large


def test_near_duplicates_with_the_same_objects_are_not_flagged(tmp_path: Path, canonical: Path) -> None:
    """A fixed camera films the same objects again and again; a caption that ignores a different layout is
    still flagged."""
    config = _config(tmp_path, canonical)
    caption.run(config, progress=False)
    samples = {s.id: s for s in ShardSet(str(canonical)).iter_samples()}
    counts = {i: sorted(o.category for o in s.objects) for i, s in samples.items()}
    same = next((a, b) for a in sorted(counts) for b in sorted(counts) if a < b and counts[a] == counts[b])
    differ = next(b for b in sorted(counts) if counts[b] != counts[same[0]] and b > same[1])
    text = "An image of a street scene at dusk seen from a parked car, with people, bicycles and cars in view."
    for victim in (*same, differ):
        _override_caption(config, victim, text)
    refine.run(config)
    flagged = {q.id: q.flags for q in read_queue(config.refine.queue)}
    assert not any("near-duplicate" in f for f in flagged.get(same[1], []))
    assert any("near-duplicate" in f for f in flagged[differ])
    always = _config(tmp_path / "always", canonical, **{"refine.near_duplicate_when": "always"})
    (tmp_path / "always").mkdir()
    caption.run(always, progress=False)
    for victim in (*same, differ):
        _override_caption(always, victim, text)
    refine.run(always)
    flagged = {q.id: q.flags for q in read_queue(always.refine.queue)}
    assert any("near-duplicate" in f for f in flagged[same[1]])

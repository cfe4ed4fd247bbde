from __future__ import annotations

import pytest
import yaml

from diffx.config import DiffxConfig, load_config, parse_config, render_params, section_hash, with_overrides
from diffx.errors import ConfigError
from diffx.models.text import token_limit

from .conftest import REPO


def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load() -> None:
    config = load_config(REPO / "params.yaml")
    assert config.data.spec().modality_names == ("rgb", "thermal", "depth")
    assert config.ingest.source.format == "coco_folders"


def test_unknown_key_is_named() -> None:
    raw = _params()
    raw["shards"]["rows_per_shrd"] = 3
    with pytest.raises(ConfigError, match=r"shards\.rows_per_shrd: unknown key"):
        parse_config(raw)


def test_unknown_nested_source_key_is_named() -> None:
    raw = _params()
    raw["ingest"]["source"]["rooot"] = "x"
    with pytest.raises(ConfigError, match=r"ingest\.source\.rooot: unknown key"):  # as written in the file
        parse_config(raw)


def test_wrong_type_is_named_with_value() -> None:
    raw = _params()
    raw["shards"]["rows_per_shard"] = "many"
    with pytest.raises(ConfigError, match=r"shards\.rows_per_shard: .*'many'"):
        parse_config(raw)


def test_bad_modality_is_named() -> None:
    raw = _params()
    raw["data"]["modalities"][1]["channels"] = 2
    with pytest.raises(ConfigError, match=r"data\.modalities\.1\.channels"):
        parse_config(raw)


def test_duplicate_modalities_rejected() -> None:
    raw = _params()
    raw["data"]["modalities"].append(dict(raw["data"]["modalities"][0]))
    with pytest.raises(ConfigError, match="modality names must be unique"):
        parse_config(raw)


def test_unknown_source_format() -> None:
    raw = _params()
    raw["ingest"]["source"]["format"] = "kitti"
    with pytest.raises(ConfigError, match=r"ingest\.source"):
        parse_config(raw)


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_section_hash_tracks_only_the_sections_given() -> None:
    a = parse_config(_params())
    raw = _params()
    raw["shards"]["rows_per_shard"] = 7
    raw["vae"]["output"] = "elsewhere"  # where a result goes is not what it is
    b = parse_config(raw)
    assert section_hash(a.data) == section_hash(b.data)
    assert section_hash(a.vae) == section_hash(b.vae)
    assert section_hash(a.shards) != section_hash(b.shards)


def test_params_yaml_is_the_rendered_typed_config() -> None:
    """Every key a stage can read is spelled out in params.yaml (DVC sees it), and each value's one written
    default lives in diffx/config/: `diffx params render params.yaml --out params.yaml` keeps them in step."""
    text = (REPO / "params.yaml").read_text()
    assert render_params(load_config(REPO / "params.yaml")) == text
    assert render_params(DiffxConfig()) == text  # the demo's params are the typed defaults


def test_overrides_are_validated_like_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"plan\.num_samples: Input should be greater than or equal to 1"):
        load_config(REPO / "params.yaml", overrides={"plan.num_samples": -5})
    config = load_config(REPO / "params.yaml")
    with pytest.raises(ConfigError, match=r"vae\.train\.steps"):
        with_overrides(config, {"vae.train.steps": 0})
    with pytest.raises(ConfigError, match=r"plan\.num_smples: unknown key"):
        with_overrides(config, {"plan.num_smples": 3})
    assert with_overrides(config, {"plan.num_samples": 5}).plan.num_samples == 5
    assert config.plan.num_samples == 64  # the loaded config is never changed in place


def test_overlays_merge_key_by_key(tmp_path) -> None:
    overlay = tmp_path / "preset.yaml"
    overlay.write_text("vae:\n  train:\n    steps: 7\nconditioning:\n  max_objects: 8\n")
    config = load_config(REPO / "params.yaml", [overlay])
    assert config.vae.train.steps == 7 and config.vae.train.lr == 2e-3 and config.conditioning.max_objects == 8


def test_one_token_limit_for_refine_the_gate_and_the_unet(tmp_path) -> None:
    """The limit is the UNet's (conditioning.max_tokens), capped by the encoder's own context."""
    config = load_config(REPO / "params.yaml")
    assert token_limit(config.conditioning) == 96
    assert token_limit(with_overrides(config, {"conditioning.max_tokens": None}).conditioning) == 512  # MiniLM
    assert token_limit(with_overrides(config, {"conditioning.max_tokens": 4096}).conditioning) == 512
    assert not hasattr(config.refine, "max_tokens") and not hasattr(config.quality.captions, "max_tokens")


def test_an_sd_initialised_unet_must_start_with_closed_gates() -> None:
    """The demo's open gates (1.0) on SD weights would add random fusers to every block from step 0."""
    raw = _params()
    raw["unet"]["model"]["init_from_sd"] = "weights/stable-diffusion-v1-4"
    with pytest.raises(ConfigError, match=r"unet\.model.*fuser_gate_init=1\.0 with init_from_sd"):
        parse_config(raw)
    raw["unet"]["model"]["fuser_gate_init"] = 0.0
    with pytest.raises(ConfigError, match=r"prediction_type=v_prediction with unet.model.init_from_sd"):
        parse_config(raw)  # and it predicts the noise, as SD does
    raw["unet"]["train"]["prediction_type"] = "epsilon"
    assert parse_config(raw).unet.model.fuser_gate_init == 0.0


def test_lpips_needs_both_files() -> None:
    raw = _params()
    raw["vae"]["lpips"] = {"vgg16": "weights/vgg16.pth", "heads": None}
    with pytest.raises(ConfigError, match="LPIPS needs both files"):
        parse_config(raw)


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def test_the_full_demo_preset_validates_and_changes_only_sizes_and_schedules() -> None:
    """`make demo-full` renders presets/demo-full.yaml over params.yaml: it must pass `diffx params check`, reach
    the configuration the published full-demo numbers came from, and leave every gate threshold, path and
    data setting as the fast default has them (a preset that loosened a gate would publish easier numbers)."""
    from typer.testing import CliRunner

    from diffx.cli import app

    preset = REPO / "presets" / "demo-full.yaml"
    checked = CliRunner().invoke(app, ["params", "check", str(REPO / "params.yaml"), "--overlay", str(preset)])
    assert checked.exit_code == 0, checked.output
    default = load_config(REPO / "params.yaml")
    full = load_config(REPO / "params.yaml", (preset,))
    assert full.vae.train.steps == 1500 and full.unet.train.steps == 2500
    assert full.vae.model.decoder == "per_modality" and full.vae.model.block_out_channels == [32, 64, 64]
    assert full.unet.model.block_out_channels == [64, 64, 128, 128] and len(full.evaluate.detector_seeds) == 5
    # the default's latent factor (/4) and UNet levels: only widths differ
    assert len(full.vae.model.block_out_channels) == len(default.vae.model.block_out_channels)
    assert full.unet.model.down_block_types == default.unet.model.down_block_types
    assert full.unet.model.painted_box_channels == default.unet.model.painted_box_channels > 0
    assert full.unet.model.layout_tokens == default.unet.model.layout_tokens  # the default's layout path
    assert full.vae.train.modality_weights == {}
    before, after = _leaves(default.model_dump(mode="json")), _leaves(full.model_dump(mode="json"))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    sections = {k.split(".")[0] + "." + k.split(".")[1] for k in changed}
    assert sections <= {
        "vae.model",
        "vae.train",
        "unet.model",
        "unet.train",
        "evaluate.detector_train",
        "evaluate.detector_seeds",
    }, sorted(changed)


def test_a_key_repeated_in_a_params_file_is_refused_with_both_lines(tmp_path) -> None:
    """PyYAML keeps the last of two equal keys: a second `vae:` block would silently replace the first."""
    text = (REPO / "params.yaml").read_text() + "\nvae:\n  train:\n    steps: 3\n"
    pasted = tmp_path / "params.yaml"
    pasted.write_text(text)
    first = 1 + text.splitlines().index("vae:")
    with pytest.raises(ConfigError, match=rf"params.yaml: not valid YAML: key 'vae' appears twice .*lines {first} and"):
        load_config(pasted)
    nested = tmp_path / "nested.yaml"
    nested.write_text("plan:\n  num_samples: 4\n  seed: 1\n  num_samples: 8\n")
    with pytest.raises(ConfigError, match=r"key 'num_samples' appears twice in one mapping \(lines 2 and 4\)"):
        load_config(nested)


def test_a_folder_given_as_the_params_file_is_named_as_a_folder(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder; expected a params YAML file"):
        load_config(tmp_path)


def test_a_box_layout_without_tokens_must_be_painted() -> None:
    from diffx.config import UnetModelConfig

    assert not UnetModelConfig(layout_tokens=False, box_raster_channels=8).layout_tokens
    assert not UnetModelConfig(layout="dense", layout_tokens=False, box_raster_channels=0).layout_tokens
    with pytest.raises(ValueError, match="by no path"):
        UnetModelConfig(layout_tokens=False, box_raster_channels=0)


def test_the_paper_presets_keep_the_papers_layout_tokens() -> None:
    """The default drops the gated tokens (measured: they add nothing on the demo's from-scratch UNet); a preset
    that reproduces the paper (an SD-initialised UNet) must keep DiffX's layout path, whatever the default."""
    paper = [p for p in sorted((REPO / "presets").glob("*.yaml")) if not p.name.startswith("demo-")]
    assert len(paper) >= 8
    for preset in paper:
        config = load_config(REPO / "params.yaml", (preset,))
        assert config.unet.model.init_from_sd and config.unet.model.layout_tokens, preset.name

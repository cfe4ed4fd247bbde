from __future__ import annotations

import pytest
import yaml

from diffx.config import load_config, parse_config
from diffx.errors import ConfigError

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
    with pytest.raises(ConfigError, match=r"ingest\.source\.coco_folders\.rooot: unknown key"):
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


def test_params_hash_tracks_sections() -> None:
    a = parse_config(_params())
    raw = _params()
    raw["shards"]["rows_per_shard"] = 7
    b = parse_config(raw)
    assert a.params_hash("data") == b.params_hash("data")
    assert a.params_hash("shards") != b.params_hash("shards")

"""The FID InceptionV3 in plain torch against pytorch-fid's, and its place as the evaluation's extractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffx.config import FeatureConfig
from diffx.errors import ConfigError
from diffx.metrics.features import build_extractor
from diffx.models.inception import FIDInceptionV3

from .inception_reference import inputs, weights

FIXTURE = Path(__file__).parent / "fixtures" / "inception_reference.npy"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded weights laid out as the FID weights file is: torchvision names, plus a classifier."""
    shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items() if "num_batches" not in k}
    state = {k: torch.from_numpy(v) for k, v in weights(shapes).items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def test_features_match_pytorch_fid(weights_file: Path) -> None:
    model = FIDInceptionV3.from_file(weights_file)
    got = model(torch.from_numpy(inputs())).numpy()
    want = np.load(FIXTURE)
    assert got.shape == want.shape == (3, 2048)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_extractor_option_reads_the_local_file(weights_file: Path, tmp_path: Path) -> None:
    extractor, name = build_extractor(FeatureConfig(extractor="inception", inception_weights=str(weights_file)))
    assert name.startswith("inception-v3-fid") and extractor.num_features == 2048
    grey = torch.from_numpy(inputs())[:, :1]
    assert extractor(grey.expand(-1, 3, -1, -1)).shape == (3, 2048)
    other = tmp_path / "other.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, other)
    with pytest.raises(ConfigError, match="not the FID InceptionV3 weights"):
        FIDInceptionV3.from_file(other)
    with pytest.raises(ConfigError, match="does not exist"):
        build_extractor(FeatureConfig(extractor="inception", inception_weights=str(tmp_path / "absent.pth")))

"""Seeded LPIPS-VGG weights and inputs that any numpy can rebuild bit for bit.

tests/test_lpips.py feeds them to diffx's LPIPS; ``python tests/lpips_reference.py OUT.json``, run once in a
throw-away environment that has the reference ``lpips`` package (and torchvision), fed them to ``lpips.LPIPS``
and wrote tests/fixtures/lpips_reference.json. numpy's PCG64 stream is the same on every platform and version,
so both sides see the same weights without a 60 MB file in git."""

from __future__ import annotations

import json
import sys

import numpy as np

VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 512),
               (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip
CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16().features
HEAD_CHANNELS = [64, 128, 256, 512, 512]
SEED = 20240721


def weights() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(torchvision VGG16 ``features.*`` state, lpips ``lin*.model.1.weight`` state), He-scaled."""
    rng = np.random.default_rng(SEED)
    trunk: dict[str, np.ndarray] = {}
    for index, (cin, cout) in zip(CONV_INDICES, VGG16_CONVS, strict=True):
        std = np.sqrt(2.0 / (cin * 9))
        trunk[f"features.{index}.weight"] = (rng.standard_normal((cout, cin, 3, 3)) * std).astype(np.float32)
        trunk[f"features.{index}.bias"] = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    heads = {
        f"lin{k}.model.1.weight": (np.abs(rng.standard_normal((c, 1, 1))) * 0.1).astype(np.float32)[None]
        for k, c in enumerate(HEAD_CHANNELS)
    }
    return trunk, heads


def inputs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Image pairs in [-1, 1]: RGB 64x64, RGB 40x56 (odd pooling sizes), and a grey pair as 3 equal channels."""
    rng = np.random.default_rng(SEED + 1)
    a = rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1).astype(np.float32)
    c = rng.uniform(-1, 1, (3, 3, 40, 56)).astype(np.float32)
    d = rng.uniform(-1, 1, (3, 3, 40, 56)).astype(np.float32)
    g = rng.uniform(-1, 1, (2, 1, 48, 48)).astype(np.float32)
    h = np.clip(g + rng.normal(0, 0.3, g.shape), -1, 1).astype(np.float32)
    return [(a, b), (c, d), (np.repeat(g, 3, axis=1), np.repeat(h, 3, axis=1))]


def _reference(out: str) -> None:  # pragma: no cover - runs only where the reference package is installed
    import lpips
    import torch

    model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False).eval()
    trunk, heads = weights()
    vgg_state = {}
    for slice_index in range(1, 6):
        for key in getattr(model.net, f"slice{slice_index}").state_dict():
            vgg_state[f"slice{slice_index}.{key}"] = torch.from_numpy(trunk[f"features.{key}"])
    model.net.load_state_dict(vgg_state)
    model.lins.load_state_dict({f"{k}.model.1.weight": torch.from_numpy(v) for k, v in enumerate(heads.values())})
    with torch.no_grad():
        distances = [model(torch.from_numpy(x), torch.from_numpy(y)).flatten().tolist() for x, y in inputs()]
    versions = {"lpips": lpips.__version__ if hasattr(lpips, "__version__") else "0.1.4", "torch": torch.__version__}
    with open(out, "w") as f:
        json.dump({"made_with": versions, "distances": distances}, f, indent=1)


if __name__ == "__main__":
    _reference(sys.argv[1])

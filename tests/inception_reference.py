"""Seeded weights and inputs for the FID InceptionV3 that any numpy rebuilds bit for bit.

tests/test_inception.py feeds them to diffx's FIDInceptionV3; ``python tests/inception_reference.py OUT.npy``,
run once in a throw-away environment with pytorch-fid (and torchvision), built pytorch-fid's ``InceptionV3`` (FID
blocks, resize and normalisation on) with these weights instead of its download and saved the 2048-d features
as tests/fixtures/inception_reference.npy. Weights are drawn per tensor in sorted name order (torchvision's
Inception3 names, which the FID weights file uses), so both sides agree without a 90 MB file in git."""

from __future__ import annotations

import sys

import numpy as np

SEED = 20151205


def weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """He-scaled convolutions and mild batch-norm statistics, so 47 layers neither vanish nor blow up."""
    rng = np.random.default_rng(SEED)
    out: dict[str, np.ndarray] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("conv.weight"):
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif name.endswith(("bn.weight", "running_var")):
            value = rng.uniform(0.8, 1.2, shape)
        elif name.endswith(("bn.bias", "running_mean")):
            value = rng.standard_normal(shape) * 0.05
        else:
            raise ValueError(f"no rule for {name}")
        out[name] = value.astype(np.float32)
    return out


def inputs() -> np.ndarray:
    """Three RGB images in [0, 1], 40 x 56 (resized to 299 inside, as pytorch-fid does)."""
    return np.random.default_rng(SEED + 1).uniform(0, 1, (3, 3, 40, 56)).astype(np.float32)


def _reference(out: str) -> None:  # pragma: no cover - runs only where pytorch-fid is installed
    import torch
    from pytorch_fid import inception

    captured: dict[str, dict] = {}

    def no_download(*args, **kwargs):  # FID weights come from our seeded draw, not the network
        model = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
        drawn = {k: torch.from_numpy(v) for k, v in weights(shapes).items()}
        full = {**model.state_dict(), **drawn}
        captured["shapes"] = shapes
        return full

    inception.load_state_dict_from_url = no_download
    net = inception.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    with torch.no_grad():
        features = net(torch.from_numpy(inputs()))[0].flatten(1).numpy()
    np.save(out, features.astype(np.float32))
    print(len(captured["shapes"]), "tensors;", features.shape, float(np.abs(features).mean()))


if __name__ == "__main__":
    _reference(sys.argv[1])

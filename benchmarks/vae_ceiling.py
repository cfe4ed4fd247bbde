"""How much of a frame's objects survives the MP-VAE: the real-data detector on real test frames, as stored and
through the VAE (encode, posterior mode, decode).

A generated frame is decoded by the same VAE, so what the detector cannot find in a reconstruction of a real
frame, no UNet can draw for it: this is the ceiling of layout fidelity and of curate's planned-box recall, per
class, measured in seconds instead of a chain run. It told the demo's /8 latent from its /4 one (bicycles found
3.8 % of the time through the /8 VAE, 31 % as stored; docs/demo-results.md, "The latent factor").

Run in a workspace where `dvc repro curate` finished (the demo: `make demo`): it reads params.yaml, the real test
split and the curate stage's real-data detector (trained now if missing). Prints one JSON object: the stored
frames first, then each VAE folder given (default: the workspace's models/vae).

    python benchmarks/vae_ceiling.py models/vae /tmp/other/vae
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from typing import Any

import torch

from diffx.config import load_config
from diffx.curate.scores import planned_box_hits
from diffx.eval.detectors import real_detector, split_digest
from diffx.metrics.measure import Measured, View, measure_set
from diffx.models.folder import load_pretrained
from diffx.models.mpvae import MPVAE
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.train.distributed import init_distributed


def through(vae: MPVAE, bit_depths: dict[str, int]) -> Any:
    """The view's transform: each frame as the VAE gives it back, quantised as a stored PNG would be."""

    @torch.no_grad()
    def transform(images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = vae(images={k: v * 2 - 1 for k, v in images.items()}).reconstructions
        result = {}
        for name in images:
            value = ((out[name].float() + 1) / 2).clamp(0, 1)
            result[name] = torch.round(value * 255) / 255 if bit_depths[name] == 8 else value
        return result

    return transform


def summary(measured: Measured, view: str, classes: list[str], threshold: float, iou: float) -> dict[str, Any]:
    """Recall at curate's confidence and IoU (all and per class), and AP@0.5 (all, per class, by size)."""
    boxes, found = Counter(), Counter()
    for (truth, labels), finds in zip(measured.truth, measured.found[(view, "real")], strict=True):
        hit = planned_box_hits((truth, labels), finds, score_threshold=threshold, iou=iou)
        for label, got in zip(labels.tolist(), hit.tolist(), strict=True):
            boxes[classes[label]] += 1
            found[classes[label]] += int(got)
    scores = measured.scores[(view, "real")]
    return {
        "recall": round(sum(found.values()) / max(1, sum(boxes.values())), 4),
        "recall_per_class": {c: round(found[c] / boxes[c], 4) if boxes[c] else None for c in classes},
        "ap50": round(scores.map50, 4),
        "ap50_per_class": scores.per_class_ap50,
        "ap50_by_size": scores.ap50_by_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vaes", nargs="*", default=["models/vae"], help="MP-VAE folders (save_pretrained)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = load_config(args.params)
    evaluation, curate = config.evaluate, config.curate
    spec = ShardSet(evaluation.real).spec
    modalities = list(spec.modality_names)
    with tempfile.TemporaryDirectory() as scratch:
        detector = real_detector(
            "real",
            ShardDataset(evaluation.real, evaluation.reference_split, modalities),
            evaluation,
            spec,
            evaluation.detector_seeds[0],
            split_digest(evaluation.real, evaluation.reference_split),
            saved=curate.detector,
            ctx=init_distributed(evaluation.device),
            save_to=curate.detector,
            checkpoints=scratch,
            progress=False,
        ).model
    bit_depths = {m: spec.modality(m).bit_depth for m in modalities}
    views = [View("stored", None, {"real": detector})]
    factors = {}
    for i, folder in enumerate(args.vaes):
        vae = load_pretrained(MPVAE, folder, "MP-VAE").eval()
        factors[f"vae{i}"] = vae.downsample_factor
        views.append(View(f"vae{i}", through(vae, bit_depths), {"real": detector}))
    test = ShardDataset(evaluation.real, evaluation.test_split, modalities)
    measured = measure_set(test, views, None, evaluation)
    classes = list(spec.classes)
    result: dict[str, Any] = {
        "test_split": evaluation.test_split,
        "frames": len(test),
        "stored": summary(measured, "stored", classes, curate.score_threshold, curate.iou),
    }
    for i, folder in enumerate(args.vaes):
        result[folder] = {
            "downsample_factor": factors[f"vae{i}"],
            **summary(measured, f"vae{i}", classes, curate.score_threshold, curate.iou),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

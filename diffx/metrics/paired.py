"""Paired metrics: each generated sample against the real item whose layout and caption it was drawn from.

The paper scores LPIPS (and the dense tasks) per modality on generated vs real test images for the same layouts.
That needs exactly one generated sample per test item in the item's own frame: plan mode ``one_per_item`` on the
test split writes it (centred in the model's frame, where ``ShardDataset`` centres the real item too). Scores
are means over the pairs, per modality: PSNR and SSIM always, LPIPS-VGG where its weights are configured."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffx.errors import DataError
from diffx.metrics.image_metrics import psnr, ssim
from diffx.progress import Progress
from diffx.shards.dataset import ShardDataset, detection_collate
from diffx.shards.reader import ShardSet


def pair_positions(real: ShardDataset, generated: ShardDataset, where: str) -> list[tuple[int, int]]:
    """(generated row, real row) for every generated sample; refuses a set that is not one per item."""
    real_ids = ShardSet(real.root, **real.storage_options).read_table(real.split, ["id"]).column("id").to_pylist()
    generated_set = ShardSet(generated.root, **generated.storage_options)
    if not generated_set.manifest.generated:
        raise DataError(generated.root, "not a generated set: paired metrics compare generate's output with real items")
    sources = generated_set.read_table(generated.split, ["source_id"]).column("source_id").to_pylist()
    position = {item: i for i, item in enumerate(real_ids)}
    missing = [s for s in sources if s not in position]
    if missing:
        raise DataError(
            where,
            f"{len(missing)} generated samples come from items not in split {real.split!r} of {real.root} "
            f"(first: {missing[0]!r}); plan it with plan.mode one_per_item and plan.split {real.split!r}",
        )
    if len(set(sources)) != len(sources) or len(sources) != len(real_ids):
        raise DataError(
            where,
            f"{len(sources)} generated samples for {len(real_ids)} items ({len(set(sources))} distinct): paired "
            "metrics need exactly one per item (plan.mode one_per_item)",
        )
    return [(g, position[s]) for g, s in enumerate(sources)]


@torch.no_grad()
def paired_scores(
    real: ShardDataset,
    generated: ShardDataset,
    modalities: list[str],
    *,
    lpips: torch.nn.Module | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    where: str = "evaluate.paired_split",
    progress: bool = False,
) -> dict[str, Any]:
    pairs = pair_positions(real, generated, where)
    values: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in ("psnr", "ssim", *(["lpips"] if lpips is not None else []))} for m in modalities
    }
    with Progress("paired metrics", len(pairs), unit="pairs", bar=progress) as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            fake = detection_collate([generated[g] for g, _ in chunk])["images"]
            true = detection_collate([real[r] for _, r in chunk])["images"]
            for m in modalities:
                a, b = fake[m].to(device), true[m].to(device)
                if a.shape != b.shape:
                    raise DataError(
                        where,
                        f"{m}: generated frames {tuple(a.shape[-2:])} vs real {tuple(b.shape[-2:])}: the pairs must "
                        "share the model's frame (plan.mode one_per_item centres each item as the real data is read)",
                    )
                values[m]["psnr"] += psnr(a, b).tolist()
                values[m]["ssim"] += ssim(a, b).tolist()
                if lpips is not None:
                    values[m]["lpips"] += lpips(a * 2 - 1, b * 2 - 1).tolist()
            bar.update(len(chunk))
    return {
        "pairs": len(pairs),
        "per_modality": {m: {k: round(float(np.mean(v)), 4) for k, v in s.items()} for m, s in values.items()},
    }

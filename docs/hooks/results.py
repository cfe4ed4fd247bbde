"""MkDocs hook: the Results page's first table, built at `mkdocs build` from the metrics committed with dvc.lock.

The page then always shows the lock's own numbers: a relock that changes a metric changes the page, with no
hand-copied value to go stale. The hand-written tables below it carry their commit and machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKER = "<!-- committed metrics -->"
REPO = Path(__file__).resolve().parents[2]


def _read(repo: Path, name: str) -> dict[str, Any]:
    return json.loads((repo / "metrics" / name).read_text())


def _per_modality(values: dict[str, Any], key: str | None = None, digits: int = 2) -> str:
    order = [m for m in ("rgb", "thermal", "depth") if m in values] + sorted(set(values) - {"rgb", "thermal", "depth"})
    return " / ".join(f"{(values[m][key] if key else values[m]):.{digits}f}" for m in order) + f" ({', '.join(order)})"


def _gain(gain: dict[str, Any]) -> str:
    interval = f" [{gain['low']:+.3f}, {gain['high']:+.3f}]" if gain.get("low") is not None else ""
    return f"{gain['mean']:+.4f}{interval}"


def committed_table(repo: Path = REPO) -> str:
    """A Markdown table of the headline metrics in ``repo/metrics`` (what `dvc metrics show` prints)."""
    vae, unet, evaluation = _read(repo, "vae.json"), _read(repo, "unet.json"), _read(repo, "eval.json")
    fidelity = evaluation["layout_fidelity_map50"]
    rows = [
        ("MP-VAE validation PSNR, dB", _per_modality(vae["val"], "psnr")),
        ("MP-VAE latent-resolution baseline PSNR, dB", _per_modality(vae["val"], "baseline_psnr")),
        ("MP-VAE validation SSIM", _per_modality(vae["val"], "ssim", 4)),
        ("DiffX-UNet steps, final loss", f"{unet['steps']}, {unet['final_loss']:.4f}"),
        ("FID of the generated set", _per_modality(evaluation["fid"])),
        (
            "layout fidelity AP@0.5: generated / real test / misaligned control",
            f"{fidelity['generated']:.4f} / {fidelity['real_test']:.4f} / {fidelity['control_misaligned']:.4f}",
        ),
        *(
            (f"detector mAP@0.5 trained on `{name}`", f"{value:.4f}")
            for name, value in sorted(evaluation["map50"].items(), key=lambda item: item[0] != "real")
        ),
        *(
            (f"gain of `{name}` over real-only, mAP@0.5 (95 % interval with 2+ seeds)", _gain(gain))
            for name, gain in sorted(evaluation["recipe_gain_map50"].items())
        ),
    ]
    lines = ["| metric (the committed `dvc.lock`) | value |", "| --- | --- |"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows]) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, committed_table(Path(config["docs_dir"]).parent))

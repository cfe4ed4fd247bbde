"""Quality-gate cost: seconds per 1,000 samples, and as a share of the ingest stage it guards.

Builds a raw dataset (the procedural demo at 160x128 as PNG, and 512x512 RGB + thermal as JPEG), runs the real ingest
stage on it, then the real ``ingest`` gate on the shards it wrote. Prints one JSON document.

    python benchmarks/quality_gate.py [--demo-samples 1000] [--large-samples 250]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffx.config import parse_config
from diffx.data.demo import write_demo
from diffx.quality.gate import GateFailed
from diffx.stages import check, ingest


def _params(raw: Path, out: Path, modalities: list[dict], names: dict[str, str], splits: list[str]) -> dict:
    return {
        "data": {"modalities": modalities, "classes": ["person", "bicycle", "car"]},
        "shards": {"rows_per_shard": 1000, "png_compress_level": 6},
        "ingest": {
            "source": {
                "format": "coco_folders",
                "root": str(raw),
                "modalities": names,
                "annotations": {s: f"annotations/{s}.json" for s in splits},
            },
            "output": str(out / "canonical"),
            "report": str(out / "ingest.json"),
            "metrics": str(out / "ingest-metrics.json"),  # not the repo's metrics/
        },
        "quality": {"reports": str(out / "quality"), "metrics": str(out / "quality-metrics"), "docs": None},
    }


def _large_raw(root: Path, count: int, size: int = 512) -> None:
    """RGB + thermal JPEG pairs (as FLIR, LLVIP and DiffX folders ship them), one box each, COCO JSON."""
    rng = np.random.default_rng(0)
    for name in ("rgb", "thermal", "annotations"):
        (root / name).mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        field = np.kron(rng.normal(0, 1, (size // 16, size // 16, 3)), np.ones((16, 16, 1)))
        rgb = np.clip(128 + 40 * field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        thermal = np.clip(rgb.mean(axis=2) + rng.normal(0, 4, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "rgb" / f"{i:06d}.jpg", quality=95)
        Image.fromarray(thermal).save(root / "thermal" / f"{i:06d}.jpg", quality=95)
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": size, "height": size})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [10, 20, 100, 60]})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}],
    }
    (root / "annotations" / "train.json").write_text(json.dumps(coco))


def measure(raw_params: dict, samples: int) -> dict:
    config = parse_config(raw_params)
    started = time.perf_counter()
    ingest.run(config, progress=False)
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    try:
        report = check.run("ingest", config)
        passed = report.success
    except GateFailed:
        passed = False
    gate_s = time.perf_counter() - started
    return {
        "samples": samples,
        "ingest_s": round(ingest_s, 2),
        "gate_s": round(gate_s, 2),
        "gate_s_per_1000": round(gate_s * 1000 / samples, 2),
        "gate_share_of_ingest_pct": round(100 * gate_s / ingest_s, 1),
        "gate_passed": passed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-samples", type=int, default=1000)
    parser.add_argument("--large-samples", type=int, default=250)
    args = parser.parse_args()
    result: dict = {"benchmark": "quality_gate", "cpus": os.cpu_count()}
    demo_modalities = [
        {"name": "rgb", "channels": 3},
        {"name": "thermal", "channels": 1},
        {"name": "depth", "channels": 1, "bit_depth": 16, "units": "millimetre", "scale": 0.001},
    ]
    with tempfile.TemporaryDirectory(prefix="diffx-bench-gate-") as tmp:
        work = Path(tmp)
        write_demo(str(work / "demo-raw"), seed=5, width=160, height=128, splits={"train": args.demo_samples})
        result["demo_160x128_rgb_thermal_depth"] = measure(
            _params(
                work / "demo-raw",
                work / "demo",
                demo_modalities,
                {"rgb": "rgb", "thermal": "thermal", "depth": "depth"},
                ["train"],
            ),
            args.demo_samples,
        )
        _large_raw(work / "large-raw", args.large_samples)
        result["512x512_rgb_thermal_from_jpeg"] = measure(
            _params(
                work / "large-raw", work / "large", demo_modalities[:2], {"rgb": "rgb", "thermal": "thermal"}, ["train"]
            ),
            args.large_samples,
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Ingest and template-captioning speed on the shared LLVIP frames (1280x1024 RGB + LWIR JPEG pairs).

Ingest decodes every JPEG and encodes canonical PNGs, which is CPU work per file; the captioner decodes the
canonical PNGs and measures brightness and warm boxes. Both are timed on the same frames, ingest once per
worker count (paired: the runs alternate, ``--repeats`` times), captioning with an empty cache. Prints one
JSON document.

    python benchmarks/ingest_realdata.py [--realdata ../shared/realdata] [--workers 1 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from diffx.config import CaptionConfig, DataConfig, IngestConfig, ShardsConfig, VocPairsSource
from diffx.data.spec import ModalitySpec
from diffx.stages.caption import caption
from diffx.stages.ingest import ingest

LLVIP_DATA = DataConfig(
    modalities=[ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)],
    classes=["person"],
)


def _ingest_options(realdata: Path, out: str, workers: int) -> IngestConfig:
    source = VocPairsSource(
        root=str(realdata / "llvip"),
        modalities={"rgb": "visible/{split}", "thermal": "infrared/{split}"},
        splits=["train"],
    )
    fields: dict[str, Any] = {
        "source": source,
        "output": f"{out}/canonical",
        "report": f"{out}/ingest.json",
        "metrics": f"{out}/ingest-metrics.json",
    }
    if "workers" in IngestConfig.model_fields:  # the option this benchmark prices
        fields["workers"] = workers
    return IngestConfig(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", default=str(Path(__file__).resolve().parents[2] / "shared" / "realdata"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    realdata = Path(args.realdata)
    shards = ShardsConfig(rows_per_shard=16)
    seconds: dict[int, list[float]] = {w: [] for w in args.workers}
    rows = 0
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            for workers in args.workers:
                started = time.perf_counter()
                result = ingest(LLVIP_DATA, _ingest_options(realdata, out, workers), shards, progress=False)
                seconds[workers].append(time.perf_counter() - started)
                rows = result.total_rows
        captioned = caption(
            CaptionConfig(
                data=f"{out}/canonical", cache=None, output=f"{out}/captions.parquet", report=f"{out}/caption.json"
            ),
            progress=False,
        )
    ingest_report = {
        str(w): {
            "seconds_median": round(statistics.median(s), 3),
            "samples_per_s": round(rows / statistics.median(s), 2),
        }
        for w, s in seconds.items()
    }
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
                "frames": rows,
                "frame_size": "1280x1024 rgb + thermal",
                "ingest_by_workers": ingest_report,
                "caption_template": {
                    "ms_per_image": round(1000 * captioned.seconds_per_image, 1),
                    "samples_per_s": round(1 / captioned.seconds_per_image, 2) if captioned.seconds_per_image else None,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

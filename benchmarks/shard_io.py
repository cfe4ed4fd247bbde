"""Shard write/read throughput beside a plain copy of the same bytes on the same disk.

Prints one JSON document. The ratio ``write_vs_copy`` / ``read_vs_copy`` is what matters: how much the
Parquet layer (row building, hashing, footer, decode of the struct column) costs over moving bytes.
Images are PNG-encoded once up front, so the numbers measure the shard layer, not the PNG codec.

It also prices the integrity check every stage now makes on reading (size, sha256, rows and schema against
the manifest, from the same bytes it parses): ``integrity.ratio`` is reading a set with the check over
reading it without (rows decoded to Python either way, as stages do), paired and repeated, on a warm cache.

    python benchmarks/shard_io.py [--samples 256] [--out /tmp/bench] [--canonical data/canonical]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from diffx.data.demo import DEMO_SPEC, render_scene, sample_rng
from diffx.data.images import encode_png
from diffx.data.sample import Sample
from diffx.data.spec import DatasetSpec, ModalitySpec
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter

RGB_THERMAL = DatasetSpec(
    modalities=(ModalitySpec(name="rgb", channels=3), ModalitySpec(name="thermal", channels=1)),
    classes=("person", "bicycle", "car"),
)


def demo_samples(count: int, width: int, height: int) -> list[Sample]:
    """Real demo scenes (RGB + thermal + depth) at the demo size."""
    samples = []
    for index in range(count):
        scene = render_scene(sample_rng(0, "bench", index), width, height)
        images = {
            name: encode_png(array, f"{index}-{name}", 6)
            for name, array in (("rgb", scene.rgb), ("thermal", scene.thermal), ("depth", scene.depth))
        }
        samples.append(Sample(f"bench-{index:06d}", "train", width, height, images))
    return samples


def large_samples(count: int, size: int) -> list[Sample]:
    """512x512 RGB + thermal with natural-image-like entropy (smooth field plus sensor noise)."""
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        base = rng.normal(0, 1, (size // 16, size // 16, 3))
        field = np.kron(base, np.ones((16, 16, 1)))
        rgb = np.clip(128 + 40 * field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        thermal = np.clip(rgb.mean(axis=2) + rng.normal(0, 4, (size, size)), 0, 255).astype(np.uint8)
        images = {"rgb": encode_png(rgb, f"{index}-rgb", 6), "thermal": encode_png(thermal, f"{index}-t", 6)}
        samples.append(Sample(f"large-{index:06d}", "train", size, size, images))
    return samples


def _plain_copy(samples: list[Sample], folder: Path) -> tuple[float, float]:
    """Write then read every image as its own file: the floor the shard layer is compared with."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for sample in samples:
        for name, image in sample.images.items():
            with open(folder / f"{sample.id}-{name}.png", "wb") as handle:
                handle.write(image.data)
                handle.flush()
                os.fsync(handle.fileno())
    write = time.perf_counter() - started
    started = time.perf_counter()
    for entry in os.scandir(folder):
        with open(entry.path, "rb") as handle:
            handle.read()
    return write, time.perf_counter() - started


def measure(label: str, samples: list[Sample], spec: DatasetSpec, work: Path, rows_per_shard: int) -> dict:
    payload = sum(len(img.data) for s in samples for img in s.images.values())
    root = work / f"{label}-shards"
    writer = ShardSetWriter(str(root), spec)
    started = time.perf_counter()
    records = writer.write_split("train", samples, rows_per_shard)
    writer.finalize(records)
    for record in records:  # same durability as the plain copy
        fd = os.open(root / record.path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = 0
    for batch in ShardSet(str(root)).iter_batches(batch_size=64):
        for name in spec.modality_names:
            column = (
                batch.column(name).combine_chunks()
                if hasattr(batch.column(name), "combine_chunks")
                else batch.column(name)
            )
            column.field("bytes").to_pylist()
        rows += batch.num_rows
    read_s = time.perf_counter() - started
    assert rows == len(samples)
    copy_write_s, copy_read_s = _plain_copy(samples, work / f"{label}-copy")
    mb = payload / 1e6
    return {
        "samples": len(samples),
        "payload_mb": round(mb, 2),
        "shards": len(records),
        "write": {"samples_per_s": round(len(samples) / write_s, 1), "mb_per_s": round(mb / write_s, 1)},
        "read": {"samples_per_s": round(len(samples) / read_s, 1), "mb_per_s": round(mb / read_s, 1)},
        "plain_copy": {"write_mb_per_s": round(mb / copy_write_s, 1), "read_mb_per_s": round(mb / copy_read_s, 1)},
        "write_vs_copy": round(copy_write_s / write_s, 3),
        "read_vs_copy": round(copy_read_s / read_s, 3),
    }


def _read_rows(root: str, verified: bool, decode: bool = False) -> int:
    """Every row of every shard as Python values: with the check (ShardSet.open_shard) or straight from disk;
    ``decode`` also decodes every image, as a stage that uses the pixels does."""
    import pyarrow.parquet as pq

    from diffx.data.images import decode_array

    shard_set = ShardSet(root)  # fresh: each shard is verified once per process, so once per repetition here
    rows = 0
    for record in shard_set.manifest.shards:
        parquet = (
            shard_set.open_shard(record)
            if verified
            else pq.ParquetFile(shard_set.fs.open(shard_set.shard_path(record), "rb"))
        )
        for batch in parquet.iter_batches(batch_size=64):
            for row in batch.to_pylist():
                rows += 1
                for name in shard_set.spec.modality_names if decode else ():
                    decode_array(row[name]["bytes"], name)
    return rows


def integrity_overhead(root: str, repeats: int = 5) -> dict:
    """Read ``root`` with and without the check, alternating, best of ``repeats`` each (warm page cache):
    rows alone (the worst case: nothing else costs anything) and rows with their images decoded."""
    out: dict = {"root": root}
    for label, decode in (("rows", False), ("rows_and_images", True)):
        _read_rows(root, True, decode)
        best = {True: float("inf"), False: float("inf")}
        for _ in range(repeats):
            for verified in (False, True):
                started = time.perf_counter()
                rows = _read_rows(root, verified, decode)
                best[verified] = min(best[verified], time.perf_counter() - started)
        out[label] = {
            "rows": rows,
            "read_s_unchecked": round(best[False], 4),
            "read_s_checked": round(best[True], 4),
            "ratio": round(best[True] / best[False], 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--large-samples", type=int, default=128)
    parser.add_argument("--out", default=None, help="work folder (default: a temp dir on the same disk as /tmp)")
    parser.add_argument("--canonical", default=None, help="also price the integrity check on this shard set")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="diffx-bench-", dir=args.out))
    try:
        result = {
            "benchmark": "shard_io",
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "demo_160x128_rgb_thermal_depth": measure(
                "demo", demo_samples(args.samples, 160, 128), DEMO_SPEC, work, rows_per_shard=64
            ),
            "512x512_rgb_thermal": measure(
                "large", large_samples(args.large_samples, 512), RGB_THERMAL, work, rows_per_shard=64
            ),
        }
        result["integrity"] = {
            "demo_160x128": integrity_overhead(str(work / "demo-shards")),
            "512x512": integrity_overhead(str(work / "large-shards")),
        }
        if args.canonical:
            result["integrity"]["canonical"] = integrity_overhead(args.canonical)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

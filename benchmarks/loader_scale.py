"""The training reader at the scale users bring (issue #38): how many cores feed a GPU that takes 80 samples/s.

Writes a synthetic shard set (RGB + 8-bit thermal + 16-bit depth, smooth fields plus sensor noise, so the PNGs
weigh what camera frames weigh), then measures, each phase in its own forked process (one worker's view):

- ``decode_only``: PNG decode of every modality of a row, bytes already in memory (the floor a reader pays);
- ``reader``: ``ShardDataset.item`` over an epoch order, no decode cache (a set larger than memory), for the
  global shuffle and the shard-aware one (``train.shuffle: shards``), with samples/s, bytes read per byte used
  and peak memory; and a second epoch with the default decode cache;
- ``old_layout``: the same shuffled read of the set written with 32 MB row groups (the former default);
- ``s3`` (``--s3``, needs moto): the shard-aware read from a local S3-compatible server;
- ``memory_growth``: the reader's peak memory over the first quarter of the set and over all of it;
- ``cores_per_gpu``: 80 samples/s over the reader's per-process rate.

    python benchmarks/loader_scale.py [--rows 10000] [--size 512] [--out /tmp/loader] [--s3]
    python benchmarks/loader_scale.py --rows 2000 --width 1280 --height 1024

Prints one JSON document. Run it alone: the phases take every core they are given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffx.data.demo import DEMO_SPEC
from diffx.data.images import decode_array, encode_png
from diffx.data.sample import Sample
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.train.data import shard_order

TARGET_SAMPLES_PER_SECOND = 80.0  # the paper-size UNet with bf16 + compile on an H100 (issue #38)


def frame(rng: np.random.Generator, height: int, width: int, channels: int, peak: int) -> np.ndarray:
    """A smooth random field (objects and background) plus per-pixel sensor noise."""
    coarse = rng.random((height // 32 + 1, width // 32 + 1, channels))
    smooth = np.kron(coarse, np.ones((32, 32, 1)))[:height, :width]
    values = np.clip(smooth + rng.normal(0, 0.02, (height, width, channels)), 0, 1) * peak
    out = values.astype(np.uint16 if peak > 255 else np.uint8)
    return out[..., 0] if channels == 1 else out


def sample(index: int, height: int, width: int) -> Sample:
    rng = np.random.default_rng(index)
    images = {
        "rgb": encode_png(frame(rng, height, width, 3, 255), f"{index}-rgb", 1),
        "thermal": encode_png(frame(rng, height, width, 1, 255), f"{index}-thermal", 1),
        "depth": encode_png(frame(rng, height, width, 1, 65535), f"{index}-depth", 1),
    }
    return Sample(f"s{index:06d}", "train", width, height, images, [])


def write_set(root: Path, rows: int, height: int, width: int, rows_per_shard: int, row_group_bytes: int) -> float:
    started = time.perf_counter()
    writer = ShardSetWriter(str(root), DEMO_SPEC, row_group_bytes=row_group_bytes)
    writer.finalize(writer.write_split("train", (sample(i, height, width) for i in range(rows)), rows_per_shard))
    return time.perf_counter() - started


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked process; its result plus that process's peak resident memory (MiB)."""
    parent, child = multiprocessing.get_context("fork").Pipe()

    def run() -> None:
        torch.set_num_threads(1)
        result = work()
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        child.send(result)

    process = multiprocessing.get_context("fork").Process(target=run)
    process.start()
    result = parent.recv()
    process.join()
    return result


def decode_only(root: Path, count: int) -> dict[str, Any]:
    shard_set = ShardSet(str(root))
    first = shard_set.manifest.shards_of("train")[0]  # one shard: the rows, not the whole set, in memory
    rows = shard_set.open_shard(first).read(columns=["rgb", "thermal", "depth"]).slice(0, count).to_pylist()
    started = time.perf_counter()
    for row in rows:
        for name in ("rgb", "thermal", "depth"):
            decode_array(row[name]["bytes"], name)
    seconds = time.perf_counter() - started
    return {"samples_per_second": round(len(rows) / seconds, 2)}


def read_epoch(root: Path | str, order: list[int], cache_bytes: int, epochs: int = 1, **storage: Any) -> dict[str, Any]:
    dataset = ShardDataset(str(root), "train", decode_cache_bytes=cache_bytes, storage_options=storage or None)
    timings = []
    for _ in range(epochs):
        started = time.perf_counter()
        for index in order:
            dataset.item(index)
        timings.append(len(order) / (time.perf_counter() - started))
    return {
        "samples_per_second": [round(t, 2) for t in timings],
        "bytes_read_per_byte_used": round(dataset.bytes_read / max(dataset.bytes_used, 1), 4),
        "bytes_used_per_sample": round(dataset.bytes_used / max(len(order) * epochs, 1)),
    }


def orders(root: Path, seed: int, buffer: int) -> dict[str, list[int]]:
    rows = tuple(r.rows for r in ShardSet(str(root)).manifest.shards_of("train"))
    total = sum(rows)
    generator = torch.Generator().manual_seed(seed)
    return {
        "global": torch.randperm(total, generator=generator).tolist(),
        "shards": shard_order(rows, buffer, torch.Generator().manual_seed(seed)).tolist(),
    }


def s3_read(root: Path, order: list[int]) -> dict[str, Any]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(port=0)
    with contextlib.redirect_stdout(sys.stderr):  # moto announces itself on stdout, where the JSON goes
        server.start()
    try:
        host, port = server.get_host_and_port()
        storage = {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
            "default_block_size": 4 << 20,
            "default_cache_type": "readahead",
        }
        import s3fs

        fs = s3fs.S3FileSystem(**storage)
        fs.mkdir("bench")
        fs.put(str(root), "bench/set", recursive=True)
        return read_epoch("s3://bench/set", order, 0, **storage)  # a str: Path would fold the '//'
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--rows-per-shard", type=int, default=500)
    parser.add_argument("--buffer", type=int, default=2048, help="shuffle window of the shard-aware order")
    parser.add_argument("--read", type=int, default=1000, help="items read per measured epoch (a prefix)")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--s3", action="store_true", help="also read from a local S3-compatible server (moto)")
    parser.add_argument("--reuse", action="store_true", help="keep the set an earlier run left in --out")
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="loader-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    new, old = work / "set", work / "set-32mb-groups"
    try:
        report: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
            "set": {
                "rows": args.rows,
                "width": args.width,
                "height": args.height,
                "rows_per_shard": args.rows_per_shard,
            },
        }
        if args.reuse and (new / "_manifest.json").exists():
            report["set"]["write_seconds"] = None  # written by an earlier run (--reuse)
        else:
            seconds = write_set(new, args.rows, args.height, args.width, args.rows_per_shard, 1 << 20)
            report["set"]["write_seconds"] = round(seconds, 1)
        report["set"]["bytes"] = sum(p.stat().st_size for p in new.rglob("*.parquet"))
        report["decode_only"] = in_child(lambda: decode_only(new, min(args.read, 300)))
        epoch = {name: order[: args.read] for name, order in orders(new, 0, args.buffer).items()}
        report["reader"] = {
            name: in_child(lambda order=order: read_epoch(new, order, 0)) for name, order in epoch.items()
        }
        report["reader"]["shards_cached_second_epoch"] = in_child(
            lambda: read_epoch(new, epoch["shards"], 256 << 20, epochs=2)
        )
        quarter = [i for i in epoch["shards"] if i < args.rows // 4]
        report["memory_growth"] = {
            "quarter_of_set": in_child(lambda: read_epoch(new, quarter, 0))["peak_rss_mib"],
            "whole_set": report["reader"]["shards"]["peak_rss_mib"],
        }
        old_rows = min(args.rows, 2 * args.rows_per_shard)
        if not (args.reuse and (old / "_manifest.json").exists()):
            write_set(old, old_rows, args.height, args.width, args.rows_per_shard, 32 << 20)
        old_order = [i for i in epoch["global"] if i < old_rows][: max(50, args.read // 5)]
        report["old_layout"] = in_child(lambda: read_epoch(old, old_order, 0))
        if args.s3:
            report["s3"] = in_child(lambda: s3_read(new, epoch["shards"][: args.read // 2]))
            local = report["reader"]["shards"]["samples_per_second"][0]
            report["s3"]["local_over_s3"] = round(local / report["s3"]["samples_per_second"][0], 3)
        reader_rate = report["reader"]["shards"]["samples_per_second"][0]
        decode_rate = report["decode_only"]["samples_per_second"]
        report["reader_over_decode_only"] = round(reader_rate / decode_rate, 3)
        report["cores_per_gpu_at_80_samples_per_second"] = round(TARGET_SAMPLES_PER_SECOND / reader_rate, 2)
        print(json.dumps(report, indent=2))
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

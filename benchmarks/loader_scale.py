"""The training reader at the scale users bring (issue #38): how many cores feed a GPU that takes 80 samples/s.

Writes a synthetic shard set (RGB + 8-bit thermal + 16-bit depth, smooth fields plus sensor noise, so the PNGs
weigh what camera frames weigh), then measures, each phase in its own forked process (one worker's view):

- ``decode_only``: PNG decode of every modality of a row, bytes already in memory (the floor a reader pays);
- ``reader``: ``ShardDataset.item`` over an epoch order, no decode cache (a set larger than memory), for the
  global shuffle and the shard-aware one (``train.shuffle: shards``), with samples/s, bytes read per byte used
  and peak memory; and a second epoch with the default decode cache; every reader phase runs with the training
  loop's malloc settings (diffx/shards/allocator.py), and ``shards_read_ahead_glibc_defaults`` once without
  them, paired;
- ``old_layout``: the same shuffled read of the set written with 32 MB row groups (the former default);
- ``s3`` (``--s3``): the shard-aware read from an S3-compatible server in its own process, with and without the
  read-ahead the training loop does (``train.read_ahead``: the next two micro-batches' row groups fetched in
  the background), beside the same read from local disk; the shards' first-open verification (hashing every
  byte once per node) is timed apart, since a node pays it once. The server is moto (what the test suite
  starts; its ranged GETs top out near 16 MiB/s on 2 cores, below what local disk feeds one worker), or any
  server at ``--s3-endpoint``, e.g. s3rver, a file-backed one that serves ~140 MiB/s here:
  ``npx s3rver@3.7.1 -d /tmp/s3 -p 4569`` then ``--s3 --s3-endpoint http://127.0.0.1:4569``
  (its keys: ``--s3-key S3RVER --s3-secret S3RVER``, the default);
- ``memory_growth``: the reader's peak memory over the first quarter of the set and over all of it;
- ``cores_per_gpu``: 80 samples/s over the reader's per-process rate; every rate is also given per CPU-second
  (``cpu_ms_per_sample``: the process's CPU time, read-ahead thread included), the cost a worker adds to a node
  when the disk is not the limit;
- ``ingest`` (``--ingest N [N ...]``): `diffx ingest` of a COCO-folders source of N frames of the same kind,
  samples/s and the peak memory of the ingest process and of its workers, per N (it must not grow with N).

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
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffx.data.demo import DEMO_SPEC
from diffx.data.images import decode_array, encode_png
from diffx.data.sample import Sample
from diffx.shards.allocator import keep_freed_buffers
from diffx.shards.dataset import ShardDataset
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.train.data import shard_order

BATCH = 16  # items per micro-batch, as the demo's loaders draw them
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
        try:
            result = work()
        except BaseException as err:
            child.send({"error": f"{type(err).__name__}: {err}"})
            raise
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        child.send(result)

    process = multiprocessing.get_context("fork").Process(target=run)
    process.start()
    result = parent.recv()
    process.join()
    if "error" in result:
        raise RuntimeError(f"a benchmark phase failed: {result['error']}")
    return result


def decode_only(root: Path, count: int) -> dict[str, Any]:
    shard_set = ShardSet(str(root))
    first = shard_set.manifest.shards_of("train")[0]  # one shard: the rows, not the whole set, in memory
    batches = shard_set.open_shard(first, in_memory=False).iter_batches(
        batch_size=16, columns=["rgb", "thermal", "depth"]
    )
    rows: list[dict[str, Any]] = []
    while len(rows) < count and (batch := next(batches, None)) is not None:  # the rows decoded, not the shard
        rows += batch.to_pylist()
    rows = rows[:count]
    started, cpu = time.perf_counter(), time.process_time()
    for row in rows:
        for name in ("rgb", "thermal", "depth"):
            decode_array(row[name]["bytes"], name)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"samples_per_second": round(len(rows) / seconds, 2), "cpu_ms_per_sample": round(1000 * cpu / len(rows), 2)}


def read_epoch(
    root: Path | str,
    order: list[int],
    cache_bytes: int,
    epochs: int = 1,
    read_ahead: int = 0,
    keep_buffers: bool = True,
    cold: bool = False,
    **storage: Any,
) -> dict[str, Any]:
    """Items in ``order``, as the training loop reads them: micro-batches of ``BATCH``, with the next
    ``read_ahead`` micro-batches handed to the dataset's read-ahead first, and the loop's malloc settings
    (``keep_buffers``: diffx/shards/allocator.py). Shards are verified before the clock starts (a node does that
    once; ``verify_seconds`` says what it cost here)."""
    if keep_buffers:
        keep_freed_buffers()
    if cold:
        drop_page_cache()
    dataset = ShardDataset(str(root), "train", decode_cache_bytes=cache_bytes, storage_options=storage or None)
    started = time.perf_counter()
    for shard in sorted({dataset._locate(i)[0] for i in order}):
        dataset._parquet(shard)
    verify_seconds = time.perf_counter() - started
    timings = []
    cpu = time.process_time()
    for _ in range(epochs):
        started = time.perf_counter()
        for start in range(0, len(order), BATCH):
            if read_ahead:
                dataset.prefetch(order[start + BATCH : start + BATCH * (read_ahead + 1)])
            for index in order[start : start + BATCH]:
                dataset.item(index)
        timings.append(len(order) / (time.perf_counter() - started))
    cpu = time.process_time() - cpu
    return {
        "samples_per_second": [round(t, 2) for t in timings],
        "cpu_ms_per_sample": round(1000 * cpu / max(len(order) * epochs, 1), 2),
        "verify_seconds": round(verify_seconds, 2),
        "bytes_read_per_byte_used": round(dataset.bytes_read / max(dataset.bytes_used, 1), 4),
        "bytes_used_per_sample": round(dataset.bytes_used / max(len(order) * epochs, 1)),
    }


def drop_page_cache() -> None:
    """Empty the kernel's page cache (root only), so the rows come from the disk, as a set larger than memory's do."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def orders(root: Path, seed: int, buffer: int) -> dict[str, list[int]]:
    rows = tuple(r.rows for r in ShardSet(str(root)).manifest.shards_of("train"))
    total = sum(rows)
    generator = torch.Generator().manual_seed(seed)
    return {
        "global": torch.randperm(total, generator=generator).tolist(),
        "shards": shard_order(rows, buffer, torch.Generator().manual_seed(seed)).tolist(),
    }


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto) in a process of its own, as a real store is: its request handling does
    not share this process's interpreter lock. Yields its endpoint URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the moto S3 server did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def raw_gets(fs: Any, root: str, order: list[int]) -> dict[str, Any]:
    """What the server serves at most: each item's bytes as one ranged GET, nothing parsed or decoded."""
    dataset = ShardDataset(f"s3://{root}", "train", storage_options=fs.storage_options)
    ranges = []
    for index in order:
        shard, row = dataset._locate(index)
        parquet = dataset._parquet(shard)
        group, _ = dataset._group_of(shard, row, parquet)
        meta = parquet.metadata.row_group(group)
        chunks = [meta.column(i) for i in range(meta.num_columns)]
        starts = [c.dictionary_page_offset or c.data_page_offset for c in chunks]
        end = max(start + c.total_compressed_size for start, c in zip(starts, chunks, strict=True))
        ranges.append((f"{root}/{dataset.records[shard].path}", min(starts), end))
    started = time.perf_counter()
    fetched = sum(len(fs.cat_file(path, start=start, end=end)) for path, start, end in ranges)
    seconds = time.perf_counter() - started
    return {
        "samples_per_second": [round(len(ranges) / seconds, 2)],
        "mib_per_second": round(fetched / seconds / 2**20, 1),
    }


def s3_read(root: Path, order: list[int], endpoint: str | None, key: str, secret: str) -> dict[str, Any]:
    """``order`` read from ``endpoint`` (None: a moto server started here). Only the manifest and the shards the
    order touches are uploaded: a 10 k set is 12 GB, the measured prefix reads a few shards of it."""
    import s3fs

    with contextlib.nullcontext(endpoint) if endpoint else s3_server() as url_of_server:
        storage = {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": url_of_server}}
        fs = s3fs.S3FileSystem(**storage)
        if not fs.exists("bench"):
            fs.mkdir("bench")
        dataset = ShardDataset(str(root), "train")
        touched = sorted({dataset.records[dataset._locate(i)[0]].path for i in order})
        fs.put(str(root / "_manifest.json"), "bench/set/_manifest.json")
        for path in touched:  # a shard an earlier run left there at its size is not sent again
            target = f"bench/set/{path}"
            if not fs.exists(target) or fs.size(target) != (root / path).stat().st_size:
                fs.put(str(root / path), target)
        url = "s3://bench/set"  # a str: Path would fold the '//'
        return {
            "server": "moto" if endpoint is None else endpoint,
            "shards_uploaded": len(touched),
            "server_get_only": raw_gets(fs, "bench/set", order),
            "local": read_epoch(root, order, 0),
            "local_read_ahead": read_epoch(root, order, 0, read_ahead=2),
            "s3": read_epoch(url, order, 0, **storage),
            "s3_read_ahead": read_epoch(url, order, 0, read_ahead=2, **storage),
        }


def write_source(root: Path, rows: int, height: int, width: int) -> None:
    """A COCO-folders dataset (rgb/, thermal/, depth/ PNG files + annotations/train.json), one person per frame."""
    from diffx.data.demo import coco_document

    for name in ("rgb", "thermal", "depth", "annotations"):
        (root / name).mkdir(parents=True, exist_ok=True)
    frames = []
    for index in range(rows):
        rng = np.random.default_rng(index)
        for name, channels, peak in (("rgb", 3, 255), ("thermal", 1, 255), ("depth", 1, 65535)):
            (root / name / f"f{index:06d}.png").write_bytes(
                encode_png(frame(rng, height, width, channels, peak), name, 1).data
            )
        box = (width // 4, height // 4, width // 2, height // 2)
        frames.append(({"file_name": f"f{index:06d}.png", "width": width, "height": height}, [("person", box)]))
    document = coco_document(frames, DEMO_SPEC.classes)
    (root / "annotations" / "train.json").write_text(json.dumps(document))


def ingest_run(source: Path, output: Path) -> dict[str, Any]:
    from diffx.config import parse_config
    from diffx.stages.ingest import ingest

    config = parse_config(
        {
            "ingest": {
                "source": {
                    "format": "coco_folders",
                    "root": str(source),
                    "modalities": {"rgb": "rgb", "thermal": "thermal", "depth": "depth"},
                    "annotations": {"train": "annotations/train.json"},
                },
                "output": str(output),
                "report": str(output.parent / f"{output.name}-report.json"),
                "metrics": str(output.parent / f"{output.name}-metrics.json"),  # not the repo's metrics/
            },
            "shards": {"rows_per_shard": 500},
        }
    )
    result = ingest(config.data, config.ingest, config.shards, progress=False)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "rows": result.total_rows,
        "samples_per_second": round(result.total_rows / result.seconds, 2),
        "workers_peak_rss_mib": round(children, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--rows-per-shard", type=int, default=500)
    parser.add_argument("--buffer", type=int, default=2048, help="shuffle window of the shard-aware order")
    parser.add_argument("--read", type=int, default=1000, help="items read per measured epoch (a prefix)")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--s3", action="store_true", help="also read from an S3-compatible server (default: moto)")
    parser.add_argument("--s3-endpoint", default=None, help="a running S3-compatible server to read from instead")
    parser.add_argument("--s3-key", default="S3RVER", help="its access key (moto takes any)")
    parser.add_argument("--s3-secret", default="S3RVER", help="its secret key")
    parser.add_argument(
        "--drop-caches", action="store_true", help="empty the page cache before each reader phase (needs root)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep the set an earlier run left in --out")
    parser.add_argument("--ingest", type=int, nargs="*", default=[], help="ingest sources of these many frames")
    parser.add_argument("--ingest-only", action="store_true", help="only the ingest phase")
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="loader-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    # this run's own stamp cache: its first reader phase hashes each shard, as a node's first run does
    stamps = work / "verified-stamps"
    shutil.rmtree(stamps, ignore_errors=True)
    os.environ["DIFFX_VERIFIED_CACHE"] = str(stamps)
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
        if args.ingest:
            report["ingest"] = {}
            for rows in args.ingest:
                source = work / f"source-{rows}"
                if not (args.reuse and (source / "annotations" / "train.json").exists()):
                    write_source(source, rows, args.height, args.width)
                output = work / f"ingested-{rows}"
                shutil.rmtree(output, ignore_errors=True)
                report["ingest"][str(rows)] = in_child(lambda s=source, o=output: ingest_run(s, o))
            if args.ingest_only:
                print(json.dumps(report, indent=2))
                return
        if args.reuse and (new / "_manifest.json").exists():
            report["set"]["write_seconds"] = None  # written by an earlier run (--reuse)
        else:
            written = in_child(  # the writer's memory stays out of the measured phases forked later
                lambda: {"seconds": write_set(new, args.rows, args.height, args.width, args.rows_per_shard, 1 << 20)}
            )
            report["set"]["write_seconds"] = round(written["seconds"], 1)
        report["set"]["bytes"] = sum(p.stat().st_size for p in new.rglob("*.parquet"))
        report["decode_only"] = in_child(lambda: decode_only(new, min(args.read, 300)))
        epoch = {name: order[: args.read] for name, order in orders(new, 0, args.buffer).items()}
        cold = args.drop_caches
        report["set"]["page_cache_dropped_before_each_reader_phase"] = cold
        report["reader"] = {
            name: in_child(lambda order=order: read_epoch(new, order, 0, cold=cold)) for name, order in epoch.items()
        }
        report["reader"]["shards_read_ahead"] = in_child(
            lambda: read_epoch(new, epoch["shards"], 0, read_ahead=2, cold=cold)
        )
        report["reader"]["shards_read_ahead_glibc_defaults"] = in_child(
            lambda: read_epoch(new, epoch["shards"], 0, read_ahead=2, keep_buffers=False, cold=cold)
        )
        report["reader"]["shards_cached_second_epoch"] = in_child(
            lambda: read_epoch(new, epoch["shards"], 256 << 20, epochs=2, cold=cold)
        )
        quarter = [i for i in epoch["shards"] if i < args.rows // 4]
        report["memory_growth"] = {
            "quarter_of_set": in_child(lambda: read_epoch(new, quarter, 0))["peak_rss_mib"],
            "whole_set": report["reader"]["shards"]["peak_rss_mib"],
        }
        old_rows = min(args.rows, 2 * args.rows_per_shard)
        if not (args.reuse and (old / "_manifest.json").exists()):
            in_child(
                lambda: {"seconds": write_set(old, old_rows, args.height, args.width, args.rows_per_shard, 32 << 20)}
            )
        old_order = [i for i in epoch["global"] if i < old_rows][: max(50, args.read // 5)]
        report["old_layout"] = in_child(lambda: read_epoch(old, old_order, 0))
        s3_error = None
        if args.s3:
            try:
                s3 = in_child(
                    lambda: s3_read(
                        new, epoch["shards"][: args.read // 2], args.s3_endpoint, args.s3_key, args.s3_secret
                    )
                )
            except RuntimeError as err:  # the server's failure: the phases measured before it are still reported
                s3_error = str(err)
                report["s3"] = {"error": s3_error}
            else:
                rate = {
                    name: s3[name]["samples_per_second"][0]
                    for name in ("local", "local_read_ahead", "s3", "s3_read_ahead")
                }
                s3["local_over_s3"] = round(rate["local"] / rate["s3"], 3)
                s3["local_read_ahead_over_s3_read_ahead"] = round(rate["local_read_ahead"] / rate["s3_read_ahead"], 3)
                report["s3"] = s3
        decode_rate = report["decode_only"]["samples_per_second"]
        for name in ("shards", "shards_read_ahead", "shards_read_ahead_glibc_defaults"):
            rate = report["reader"][name]["samples_per_second"][0]
            report["reader"][name]["over_decode_only"] = round(rate / decode_rate, 3)
            report["reader"][name]["cores_per_gpu_at_80_samples_per_second"] = round(
                TARGET_SAMPLES_PER_SECOND / rate, 2
            )
            cpu = report["reader"][name]["cpu_ms_per_sample"]
            report["reader"][name]["over_decode_only_per_cpu_second"] = round(
                report["decode_only"]["cpu_ms_per_sample"] / cpu, 3
            )
            report["reader"][name]["cores_per_gpu_at_80_samples_per_second_cpu_bound"] = round(
                TARGET_SAMPLES_PER_SECOND * cpu / 1000, 2
            )
        print(json.dumps(report, indent=2))
        if s3_error:
            sys.exit(s3_error)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

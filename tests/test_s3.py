"""Object storage: shards and stages write s3:// URLs through fsspec; tested on a local moto S3 server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from diffx.shards.dataset import ShardDataset  # noqa: E402
from diffx.shards.reader import ShardSet  # noqa: E402
from diffx.shards.validate import validate_shard_set  # noqa: E402
from diffx.shards.writer import ShardSetWriter  # noqa: E402
from diffx.stages import ingest  # noqa: E402

from .conftest import make_config, make_sample  # noqa: E402

pytestmark = pytest.mark.slow  # a moto S3 server on 127.0.0.1


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and a bucket; yields the bucket URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    patch = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("diffx-test")
    yield "s3://diffx-test"
    patch.undo()
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_shards_round_trip_and_validate_on_s3(s3: str, spec) -> None:
    root = f"{s3}/shards"
    writer = ShardSetWriter(root, spec)
    records = writer.write_split("train", (make_sample(f"t{i}", seed=i) for i in range(6)), 4)
    writer.finalize(records)
    shard_set = ShardSet(root)
    assert len(shard_set) == 6 and [s.id for s in shard_set.iter_samples()] == [f"t{i}" for i in range(6)]
    assert validate_shard_set(root).ok
    assert ShardDataset(root, "train")[5]["images"]["depth"].shape == (1, 32, 40)
    import s3fs

    fs = s3fs.S3FileSystem()
    assert not [p for p in fs.find("diffx-test/shards") if ".tmp-" in p]  # temporary names renamed away
    key = "diffx-test/shards/train/part-00001.parquet"
    data = fs.cat(key)
    fs.pipe(key, data[:-50])  # a truncated upload
    report = validate_shard_set(root)
    assert not report.ok and any("truncated" in p for p in report.problems)


def test_read_ahead_over_s3_reads_each_group_once_in_one_request(s3: str, spec, tmp_path: Path) -> None:
    """Over an object store the reader asks for a row group in one ranged GET (pre-buffered, no fsspec block
    cache), four at a time in the background, and returns what a local read of the same set returns."""
    import s3fs

    samples = [make_sample(f"t{i}", seed=i) for i in range(12)]
    for root in (f"{s3}/ahead", str(tmp_path / "ahead")):
        writer = ShardSetWriter(root, spec, row_group_bytes=1)
        writer.finalize(writer.write_split("train", iter(samples), 6))
    remote = ShardDataset(f"{s3}/ahead", "train", decode_cache_bytes=0)
    local = ShardDataset(str(tmp_path / "ahead"), "train", decode_cache_bytes=0)
    remote.item(0)  # opens (verifies) shard 0
    gets = []
    real_fetch = s3fs.core.S3File._fetch_range

    def counted(self, start, end):  # type: ignore[no-untyped-def]
        gets.append((self.path, start, end))
        return real_fetch(self, start, end)

    patch = pytest.MonkeyPatch()
    patch.setattr(s3fs.core.S3File, "_fetch_range", counted)
    try:
        order = [5, 2, 4, 1, 3]
        remote.prefetch(order)
        assert remote._ahead is not None and remote._ahead._max_workers == 4
        for index in order:
            assert torch.equal(remote.item(index)["images"]["rgb"], local.item(index)["images"]["rgb"])
    finally:
        patch.undo()
    assert len(gets) == len(order)  # one ranged GET per row group, none twice (footers: read once, at opening)


def test_ingest_writes_its_shards_to_s3(s3: str, demo_root: Path, tmp_path: Path) -> None:
    config = make_config(demo_root, f"{s3}/canonical")
    config.ingest.report = str(tmp_path / "ingest.json")
    config.ingest.metrics = str(tmp_path / "ingest-metrics.json")
    result = ingest.run(config, progress=False)
    report = validate_shard_set(f"{s3}/canonical")
    assert report.ok and report.rows == result.total_rows == 14


def test_generate_writes_to_s3_and_evaluate_reads_from_it(s3: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from diffx.config import parse_config
    from diffx.stages import evaluate, generate, plan

    from .test_flows import _Factory
    from .test_generate import _params
    from .test_generate import world as world_fixture
    from .tiny_models import tiny_evaluate

    tmp = tmp_path_factory.mktemp("s3-generate")
    world = world_fixture.__wrapped__(_Factory(tmp))
    raw = _params(world, tmp / "work")
    raw["plan"]["num_samples"], raw["plan"]["rows_per_shard"] = 6, 3
    raw["generate"]["output"] = f"{s3}/synthetic"
    raw["evaluate"] = tiny_evaluate(
        world / "captioned",
        tmp,
        synthetic=f"{s3}/synthetic",
        metrics=f"{s3}/metrics/eval.json",
        report=f"{s3}/reports/eval.json",
        plots=f"{s3}/metrics/eval",
        grid=f"{s3}/reports/samples.png",
    )
    config = parse_config(raw)
    plan.run(config)
    assert generate.run(config, progress=False).complete
    assert validate_shard_set(f"{s3}/synthetic").rows == 6
    result = evaluate.run(config, progress=False)
    import s3fs

    fs = s3fs.S3FileSystem()
    assert json.loads(fs.cat("diffx-test/reports/eval.json")) == result.metrics
    assert json.loads(fs.cat("diffx-test/metrics/eval.json")) == result.headline
    assert fs.exists("diffx-test/metrics/eval/pr_real.csv") and fs.exists("diffx-test/reports/samples.png")

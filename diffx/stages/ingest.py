"""Stage ``ingest``: a raw dataset -> validated canonical Parquet shards + a report.

Samples that fail validation are quarantined (listed with the reason in the report), never silently
dropped; too many of them fails the stage, because a reader pointed at the wrong folder should stop
the chain instead of producing an almost-empty dataset.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from diffx import fsio
from diffx.config import DataConfig, DiffxConfig, IngestConfig, ShardsConfig, section_hash
from diffx.data.images import encode_png, set_max_pixels
from diffx.data.layouts import sobel_edges
from diffx.data.parallel import resolve_workers, resolved
from diffx.data.readers import ReadContext, list_source
from diffx.data.sample import Rejected, Sample, validated
from diffx.data.spec import DatasetSpec
from diffx.errors import ConfigError, DataError
from diffx.progress import Progress
from diffx.shards.manifest import ShardRecord
from diffx.shards.writer import ShardSetWriter
from diffx.stages.guard import guard

log = logging.getLogger(__name__)


def run(config: DiffxConfig, *, progress: bool = True) -> IngestResult:
    guard("ingest", config)
    return ingest(config.data, config.ingest, config.shards, progress=progress)


@dataclass
class IngestResult:
    output: str
    rows: dict[str, int]
    shards: int
    quarantined: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def report(self) -> dict[str, Any]:
        total = self.total_rows + len(self.quarantined)
        return {
            "output": self.output,
            "rows": self.total_rows,
            "rows_by_split": dict(sorted(self.rows.items())),
            "shards": self.shards,
            "quarantined": len(self.quarantined),
            "quarantined_fraction": round(len(self.quarantined) / total, 6) if total else 0.0,
            "seconds": round(self.seconds, 3),
            "quarantine": [quarantine_entry(r) for r in self.quarantined],
        }

    def headline(self) -> dict[str, Any]:
        """What the data is, for ``dvc metrics show``: counts only, no timings (the report has those)."""
        report = self.report()
        return {k: report[k] for k in ("rows", "rows_by_split", "quarantined", "quarantined_fraction")}


def quarantine_entry(rejected: Rejected) -> dict[str, Any]:
    """One quarantined sample as the ingest report and the dry-run survey both list it."""
    return {"id": rejected.id, "split": rejected.split, "reason": rejected.reason, "files": list(rejected.files)}


def _write_split_streams(
    writer: ShardSetWriter, stream: Iterable[Sample], rows_per_shard: int, rows: dict[str, int]
) -> list[ShardRecord]:
    """Buffer per split and cut a shard whenever a split's buffer is full (readers may interleave splits)."""
    buffers: dict[str, list[Sample]] = {}
    counts: dict[str, int] = {}
    records: list[ShardRecord] = []
    for sample in stream:
        buffer = buffers.setdefault(sample.split, [])
        buffer.append(sample)
        rows[sample.split] = rows.get(sample.split, 0) + 1
        if len(buffer) == rows_per_shard:
            records.append(writer.write_shard(sample.split, counts.get(sample.split, 0), buffer))
            counts[sample.split] = counts.get(sample.split, 0) + 1
            buffers[sample.split] = []
    for split, buffer in sorted(buffers.items()):
        if buffer:
            records.append(writer.write_shard(split, counts.get(split, 0), buffer))
    return records


def _counted(items: Iterable[Any], counter: Progress) -> Iterator[Any]:
    """Count what the reader yields (readers stream, so the total is unknown until the end)."""
    for item in items:
        yield item
        counter.update(1)


@dataclass(frozen=True)
class EdgesFromRgb:
    """An ``edges`` layout the source does not have is computed from the RGB (Sobel), as the paper does.

    A picklable callable, run in the ingest workers right after each sample is built."""

    spec: DatasetSpec
    compress_level: int

    @cached_property
    def _rgb(self) -> str | None:
        """The 3-channel modality edges are computed from, looked up once (not once per sample)."""
        return next((m.name for m in self.spec.modalities if m.channels == 3), None)

    def __call__(self, item: Sample | Rejected) -> Sample | Rejected:
        rgb = self._rgb
        if self.spec.layout_kind == "edges" and isinstance(item, Sample) and item.layout is None and rgb in item.images:
            source = item.images[rgb]
            try:
                item.layout = encode_png(sobel_edges(source.to_array()), f"{source.path}#edges", self.compress_level)
            except DataError as err:
                return Rejected(item.id, item.split, str(err), (source.path,))
        return item


def read_context(data: DataConfig, options: IngestConfig, shards: ShardsConfig) -> ReadContext:
    """The reader's context; a channel rule for a modality that is not a 1-channel one is a config error."""
    spec = data.spec()
    set_max_pixels(options.max_image_pixels)  # before the workers fork: they inherit it
    channels = options.source.channels
    for name, rule in channels.items():
        if name not in spec.modality_names:
            raise ConfigError(
                f"ingest.source.channels.{name}: not a modality of data.modalities {list(spec.modality_names)}"
            )
        if spec.modality(name).channels != 1 and rule != "strict":
            raise ConfigError(f"ingest.source.channels.{name}: channel rules apply to 1-channel modalities only")
    return ReadContext(spec, shards.png_compress_level, dict(channels))


def built_samples(data: DataConfig, options: IngestConfig, shards: ShardsConfig) -> Iterator[Sample | Rejected]:
    """What the reader yields, each item built (and given computed edges) on the ingest worker processes: the
    one source pipeline that ingest writes from and the dry-run survey reports on."""
    ctx = read_context(data, options, shards)
    edges = EdgesFromRgb(data.spec(), ctx.compress_level)
    return resolved(list_source(options.source, ctx), edges, resolve_workers(options.workers))


def refuse_too_many_rejects(options: IngestConfig, rejected: list[Rejected], valid: int) -> None:
    """The error names the commonest reasons: a mismatch of the whole source shows in the message itself.

    The dry run calls it too, so it fails exactly where ingest would."""
    total = valid + len(rejected)
    kinds = Counter(_reason_kind(r.reason) for r in rejected)
    example = {}
    for r in rejected:
        example.setdefault(_reason_kind(r.reason), r)
    common = "; ".join(
        f"{count}x {reason} (e.g. sample {example[reason].id}: {example[reason].reason.split(': ', 1)[0]})"
        for reason, count in kinds.most_common(3)
    )
    if rejected and options.on_invalid == "raise":
        raise DataError(
            options.report,
            f"{len(rejected)} invalid sample(s), first: {rejected[0].id}: {rejected[0].reason} (on_invalid: raise)",
        )
    fraction = len(rejected) / total if total else 0.0
    if fraction > options.max_quarantine_fraction:
        raise DataError(
            options.report,
            f"{len(rejected)} of {total} samples quarantined ({fraction:.1%}), above "
            f"ingest.max_quarantine_fraction={options.max_quarantine_fraction}; commonest reasons: {common}",
        )
    if valid == 0:
        why = f"; all {len(rejected)} quarantined, commonest reasons: {common}" if rejected else ""
        raise DataError(str(getattr(options.source, "root", "source")), f"no valid sample was read{why}")


def _reason_kind(reason: str) -> str:
    """A reason without its sample-specific path prefix, so equal problems group together."""
    return reason.split(": ", 1)[-1] if ": " in reason else reason


def ingest(data: DataConfig, options: IngestConfig, shards: ShardsConfig, *, progress: bool = True) -> IngestResult:
    """``data`` is written into the manifest: later stages read what the set is from there, not from params."""
    started = time.perf_counter()
    spec = data.spec()
    with fsio.staged_folder(options.output) as staging:  # a failed run keeps the previous good set
        writer = ShardSetWriter(
            staging,
            spec,
            params_hash=section_hash(data, options, shards),
            row_group_bytes=shards.row_group_bytes,
            compression=shards.compression,
        )
        rejected: list[Rejected] = []
        rows: dict[str, int] = {}
        built = built_samples(data, options, shards)
        with Progress("ingest", None, unit="samples", bar=progress) as counter:
            stream = validated(_counted(built, counter), spec, rejected)
            records = _write_split_streams(writer, stream, shards.rows_per_shard, rows)
        result = IngestResult(options.output, rows, len(records), rejected, time.perf_counter() - started)
        report = result.report()
        fsio.write_json_atomic(options.report, report)
        fsio.write_json_atomic(options.metrics, result.headline())
        for item in rejected:
            log.warning("quarantined %s (%s): %s", item.id, item.split, item.reason)
        refuse_too_many_rejects(options, rejected, result.total_rows)
        writer.finalize(records)  # last: only now does the shard set look complete
    log.info(
        "ingested %d samples into %d shards (%d quarantined) in %.1fs",
        result.total_rows,
        len(records),
        len(rejected),
        result.seconds,
    )
    return result

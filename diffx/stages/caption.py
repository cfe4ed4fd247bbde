"""Stage ``caption``: a caption for every canonical sample, from the configured backend, cached.

Writes a small table (id, split, caption, caption_source, key) rather than copying every image: the
``refine`` stage joins it back onto the shards once, after the rules and the human decisions.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from diffx import fsio
from diffx.caption.cache import CaptionCache, cache_key
from diffx.caption.lmm import layout_summary
from diffx.caption.table import CAPTION_SCHEMA
from diffx.caption.template import TemplateCaptioner
from diffx.config import CaptionConfig, DiffxConfig
from diffx.data.sample import Sample
from diffx.data.spec import DatasetSpec
from diffx.errors import DataError
from diffx.progress import Progress
from diffx.shards.reader import ShardSet
from diffx.stages.guard import guard

log = logging.getLogger(__name__)


def run(config: DiffxConfig, *, progress: bool = True) -> CaptionResult:
    guard("caption", config)
    return caption(config.caption, progress=progress)


@dataclass
class CaptionResult:
    output: str
    rows: int
    cached: int
    computed: int
    seconds: float
    seconds_per_image: float
    source: str

    def report(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "rows": self.rows,
            "cached": self.cached,
            "computed": self.computed,
            "source": self.source,
            "seconds_per_computed_image": round(self.seconds_per_image, 5),
        }


def build_captioner(options: CaptionConfig, spec: DatasetSpec) -> Any:
    if options.backend == "template":
        return TemplateCaptioner(spec, options.template.scene)
    from diffx.caption.lmm import DEFAULT_PROMPT, LmmCaptioner

    lmm = options.lmm
    assert lmm is not None  # the config validator guarantees it
    return LmmCaptioner(
        spec,
        lmm.model,
        device=lmm.device,
        dtype=lmm.dtype,
        batch_size=lmm.batch_size,
        max_new_tokens=lmm.max_new_tokens,
        max_words=lmm.max_words,
        prompt=lmm.prompt or DEFAULT_PROMPT,
    )


def _batches(shard_set: ShardSet, size: int) -> Any:
    batch: list[Sample] = []
    for sample in shard_set.iter_samples():
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def caption(options: CaptionConfig, *, progress: bool = True) -> CaptionResult:
    """What the set is (modalities, classes) comes from the canonical manifest."""
    started = time.perf_counter()
    shard_set = ShardSet(options.data)
    captioner = build_captioner(options, shard_set.spec)
    cache = CaptionCache(options.cache)
    rows: list[dict[str, Any]] = []
    compute_seconds, computed = 0.0, 0
    bar = Progress(f"caption ({captioner.source})", len(shard_set), unit="images", bar=progress)
    try:
        for batch in _batches(shard_set, options.batch_size):
            keys = [
                cache_key(s, captioner.source, captioner.model_id, captioner.prompt, layout_summary(s)) for s in batch
            ]
            known = cache.get_many(keys)
            todo = [(s, k) for s, k in zip(batch, keys, strict=True) if k not in known]
            if todo:
                tick = time.perf_counter()
                texts = captioner.caption_batch([s for s, _ in todo])
                compute_seconds += time.perf_counter() - tick
                computed += len(todo)
                fresh = {k: t for (_, k), t in zip(todo, texts, strict=True)}
                cache.put_many(fresh)
                known.update(fresh)
            for sample, key in zip(batch, keys, strict=True):
                rows.append(
                    {
                        "id": sample.id,
                        "split": sample.split,
                        "caption": known[key],
                        "caption_source": captioner.source,
                        "key": key,
                    }
                )
            bar.update(len(batch))
    except DataError:
        raise
    finally:
        bar.close()
        cache.close()
    if not rows:
        raise DataError(options.data, "no samples to caption")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=CAPTION_SCHEMA), buffer)
    fsio.write_bytes_atomic(options.output, buffer.getvalue())
    result = CaptionResult(
        options.output,
        len(rows),
        len(rows) - computed,
        computed,
        time.perf_counter() - started,
        compute_seconds / computed if computed else 0.0,
        captioner.source,
    )
    fsio.write_json_atomic(options.report, result.report())
    log.info(
        "captioned %d samples with %s (%d from cache, %.1f ms per computed image)",
        len(rows),
        captioner.source,
        result.cached,
        1000 * result.seconds_per_image,
    )
    return result

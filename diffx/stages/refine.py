"""Stage ``refine``: rules + human decisions -> the captioned shard set and the review queue.

Order per sample: the backend's caption -> safe fixes -> flags -> the reviewer's decision for that id (if
any). An ``edit`` replaces the caption (source ``human``); a ``reject`` falls back to the grounded template
caption (source ``template``); an ``accept`` clears the flags only while the caption is the one the reviewer
saw (a changed caption is flagged again). Empty captions never reach the shards: they fall back to the
template too. Everything is a pure function of (shards, captions table, decisions file), so ``dvc repro``
gives the same captions without a human at the keyboard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffx import fsio
from diffx.caption.decisions import Decision, caption_digest, read_decisions
from diffx.caption.layout_text import class_counts
from diffx.caption.queue import QueueItem
from diffx.caption.rules import near_duplicates, refine_caption
from diffx.caption.table import read_captions
from diffx.caption.template import NAME as TEMPLATE
from diffx.caption.template import TemplateCaptioner
from diffx.config import (
    ConditioningConfig,
    DiffxConfig,
    RefineConfig,
    ShardsConfig,
    TemplateCaptionConfig,
    section_hash,
)
from diffx.data.sample import Sample
from diffx.errors import DataError
from diffx.models.text import token_counter, token_limit
from diffx.shards.reader import ShardSet
from diffx.shards.writer import ShardSetWriter
from diffx.stages.guard import guard

log = logging.getLogger(__name__)


def run(config: DiffxConfig) -> RefineResult:
    guard("refine", config)
    return refine(config.refine, config.conditioning, config.shards, config.caption.template)


@dataclass
class RefineResult:
    output: str
    rows: int
    flagged: int
    pending: int
    fixes: Counter[str] = field(default_factory=Counter)
    flag_kinds: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "rows": self.rows,
            "flagged": self.flagged,
            "pending_review": self.pending,
            "fixes": dict(sorted(self.fixes.items())),
            "flags": dict(sorted(self.flag_kinds.items())),
            "decisions": dict(sorted(self.decisions.items())),
            "caption_sources": dict(sorted(self.sources.items())),
        }


def _flag_kind(flag: str) -> str:
    for kind in ("mentions", "never mentions", "says", "puts", "tokens", "near-duplicate", "empty", "decision is for"):
        if kind in flag:
            return kind
    return flag


def _apply(
    sample: Sample,
    caption: str,
    source: str,
    flags: list[str],
    decision: Decision | None,
    template: TemplateCaptioner,
    result: RefineResult,
) -> tuple[str, str, list[str]]:
    if decision is not None:
        if decision.action == "edit":
            result.decisions["edit"] += 1
            return decision.caption or "", "human", []
        if decision.action == "reject":
            result.decisions["reject"] += 1
            return template.caption(sample), TEMPLATE, []
        if decision.reviewed == caption_digest(caption):
            result.decisions["accept"] += 1
            return caption, source, []
        flags = [*flags, "decision is for an earlier version of this caption; review again"]
    if not caption:
        return template.caption(sample), TEMPLATE, flags
    return caption, source, flags


def _same_objects(samples: list[Sample], options: RefineConfig) -> Callable[[str, str], bool] | None:
    """Fixed cameras film the same objects many times; such frames may share a caption."""
    if options.near_duplicate_when == "always":
        return None
    counts = {s.id: class_counts(o.category for o in s.objects) for s in samples}
    return lambda a, b: counts[a] == counts[b]


def refine(
    options: RefineConfig,
    conditioning: ConditioningConfig,
    shards: ShardsConfig,
    template_options: TemplateCaptionConfig | None = None,
) -> RefineResult:
    """Captions are held to the UNet's token limit (``conditioning``), counted by its own tokenizer; fallback
    captions use the caption stage's template words (``template_options``)."""
    started = time.perf_counter()
    tokenizer, max_tokens = conditioning.tokenizer(), token_limit(conditioning)
    shard_set = ShardSet(options.data)
    spec = shard_set.spec
    captions = read_captions(options.captions)
    by_shard = [(record, list(shard_set.iter_samples_of(record))) for record in shard_set.manifest.shards]
    samples = [sample for _, members in by_shard for sample in members]
    ids = {s.id for s in samples}
    missing = sorted(ids - set(captions))
    if missing:
        raise DataError(
            options.captions, f"{len(missing)} sample(s) have no caption, e.g. {missing[:3]}; rerun the caption stage"
        )
    decisions = read_decisions(options.decisions, known_ids=ids)
    count_tokens = token_counter(tokenizer)
    template = TemplateCaptioner(spec, template_options.scene if template_options else None)
    result = RefineResult(options.output, len(samples), 0, 0)

    refined: dict[str, tuple[str, list[str], list[str]]] = {}
    for sample in samples:
        row = captions[sample.id]
        outcome = refine_caption(row["caption"], sample.objects, spec.classes, sample.width, count_tokens, max_tokens)
        refined[sample.id] = (outcome.caption, outcome.fixes, outcome.flags)
    duplicates = near_duplicates(
        {k: v[0] for k, v in refined.items() if v[0]}, options.near_duplicate, _same_objects(samples, options)
    )
    for sample_id, other in duplicates.items():
        refined[sample_id][2].append(f"near-duplicate of {other}'s caption")

    queue: list[QueueItem] = []
    out_samples: dict[str, Sample] = {}
    for sample in samples:
        text, fixes, flags = refined[sample.id]
        source = captions[sample.id]["caption_source"]
        result.fixes.update(fixes)
        final, final_source, open_flags = _apply(
            sample, text, source, flags, decisions.get(sample.id), template, result
        )
        if flags:
            result.flagged += 1
            result.flag_kinds.update(_flag_kind(f) for f in flags)
        if open_flags:
            queue.append(
                QueueItem(
                    sample.id,
                    sample.split,
                    text,
                    source,
                    caption_digest(text),
                    open_flags,
                    captions[sample.id]["caption"] if fixes else None,
                )
            )
        result.sources[final_source] += 1
        out_samples[sample.id] = dataclasses.replace(sample, caption=final, caption_source=final_source)

    with fsio.staged_folder(options.output) as staging:  # a failed run keeps the previous captioned set
        writer = ShardSetWriter(
            staging,
            spec,
            params_hash=section_hash(
                options, shards, extra={"tokenizer": tokenizer, "max_tokens": max_tokens, "scene": template.scene}
            ),
            row_group_bytes=shards.row_group_bytes,
            compression=shards.compression,
        )
        records = []
        for record, members in by_shard:  # keep the canonical shard layout
            records.append(writer.write_shard(record.split, record.index, [out_samples[s.id] for s in members]))
        writer.finalize(records)
    lines = "".join(
        json.dumps(dataclasses.asdict(q), ensure_ascii=False, sort_keys=True) + "\n"
        for q in sorted(queue, key=lambda q: q.id)
    )
    fsio.write_bytes_atomic(options.queue, lines.encode("utf-8"))
    result.pending = len(queue)
    fsio.write_json_atomic(options.report, result.report())
    log.info(
        "refined %d captions in %.1fs: %d flagged, %d awaiting review, decisions %s",
        len(samples),
        time.perf_counter() - started,
        result.flagged,
        result.pending,
        dict(result.decisions),
    )
    return result

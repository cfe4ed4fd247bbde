"""Source readers: each turns one real dataset layout into a stream of canonical samples.

Split as in img2dataset: readers only *read*; validation, sharding and writing happen downstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from diffx.data.readers import coco_folders, come15k, diffx_folder, flir, mfnet, sunrgbd, voc_pairs
from diffx.data.readers.base import ReadContext
from diffx.data.sample import Rejected, Sample

READERS: dict[str, Callable[[Any, ReadContext], Iterator[Sample | Rejected]]] = {
    "coco_folders": coco_folders.read,
    "voc_pairs": voc_pairs.read,
    "diffx_folder": diffx_folder.read,
    "mfnet": mfnet.read,
    "flir": flir.read,
    "come15k": come15k.read,
    "sunrgbd": sunrgbd.read,
}


def read_source(source: Any, ctx: ReadContext) -> Iterator[Sample | Rejected]:
    """Dispatch on ``source.format`` (the discriminator of the ingest.source config)."""
    return READERS[source.format](source, ctx)

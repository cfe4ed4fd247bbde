"""Source readers: each turns one real dataset layout into a stream of canonical samples.

Split as in img2dataset: readers only *read*; validation, sharding and writing happen downstream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from diffx.data.readers import coco_folders, come15k, diffx_folder, flir, kaist, mfnet, sunrgbd, voc_pairs
from diffx.data.readers.base import Pending, ReadContext
from diffx.data.sample import Rejected, Sample
from diffx.errors import DataError

READERS: dict[str, Callable[[Any, ReadContext], Iterator[Pending | Rejected]]] = {
    "coco_folders": coco_folders.read,
    "voc_pairs": voc_pairs.read,
    "diffx_folder": diffx_folder.read,
    "mfnet": mfnet.read,
    "flir": flir.read,
    "come15k": come15k.read,
    "sunrgbd": sunrgbd.read,
    "kaist": kaist.read,
}


def list_source(source: Any, ctx: ReadContext) -> Iterator[Pending | Rejected]:
    """What the source holds, not yet decoded; dispatch on ``source.format`` (the ingest.source discriminator)."""
    root = str(source.root)
    if not os.path.exists(root):
        raise DataError(root, "ingest.source.root: folder not found; expected the dataset's folder")
    if not os.path.isdir(root):
        raise DataError(root, f"ingest.source.root: is a file; expected the folder of the {source.format} dataset")
    return READERS[source.format](source, ctx)


def read_source(source: Any, ctx: ReadContext) -> Iterator[Sample | Rejected]:
    """Every sample of the source, built here one by one (ingest builds them on worker processes instead)."""
    for item in list_source(source, ctx):
        yield item.resolve() if isinstance(item, Pending) else item

"""The LMM captioner: any transformers image-text-to-text model (LLaVA-1.5, Qwen2-VL, ...).

The model sees the RGB frame (or the first modality shown in grey) and a prompt that hands it what the
layout already knows: classes, counts, rough positions, and which other modalities the scene has. Decoding
is greedy, so a caption is a pure function of (image, prompt, model) and can be cached by that key.
Loading never downloads unless asked: ``local_files_only`` follows ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffx.caption.layout_text import class_counts, counted, join_words, place
from diffx.data.sample import Sample
from diffx.data.spec import DatasetSpec
from diffx.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "Describe this {modalities} street image in 3 to 5 sentences for training an image generator. Start "
    "with 'An image of'. Mention the main objects, what they do and where they are, then the other objects, "
    "the scene, the time of day and the weather. The annotated objects are: {layout}. Use at most "
    "{max_words} words."
)


def layout_summary(sample: Sample) -> str:
    if not sample.objects:
        return "none"
    counts = class_counts(o.category for o in sample.objects)
    parts = []
    for category in sorted(counts):
        sides = sorted(
            {
                place(o.category, o.bbox, sample.width, sample.height).side
                for o in sample.objects
                if o.category == category
            }
        )
        parts.append(f"{counted(category, counts[category])} ({', '.join(sides)})")
    return join_words(parts)


def _display_image(sample: Sample, spec: DatasetSpec) -> Image.Image:
    """The RGB modality, or else the first modality scaled to 8-bit grey and shown as RGB."""
    name = next((m.name for m in spec.modalities if m.channels == 3), spec.modalities[0].name)
    array = sample.images[name].to_array()
    if array.ndim == 2:
        array = (array.astype(np.float32) * (255.0 / spec.modality(name).max_value)).astype(np.uint8)
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array, "RGB")


class LmmCaptioner:
    """Batched captions from a transformers image-text-to-text model."""

    def __init__(
        self,
        spec: DatasetSpec,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        max_new_tokens: int = 160,
        max_words: int = 120,
        prompt: str = DEFAULT_PROMPT,
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.spec = spec
        self.model_id = model
        self.source = f"lmm:{os.path.basename(model.rstrip('/')) or model}"
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_words = max_words
        self.prompt = prompt
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
        )
        torch_dtype = {
            "auto": torch.bfloat16 if self.device.type == "cuda" else torch.float32,
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[dtype]
        try:
            self.processor = AutoProcessor.from_pretrained(model, local_files_only=offline)
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype, local_files_only=offline)
        except (OSError, ValueError) as err:
            raise ConfigError(f"caption.lmm.model {model!r}: cannot load an image-text-to-text model ({err})") from None
        self.model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token

    def _text(self, sample: Sample) -> str:
        names = join_words(list(self.spec.modality_names)).replace("rgb", "RGB")
        request = self.prompt.format(modalities=names, layout=layout_summary(sample), max_words=self.max_words)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request}]}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        token = getattr(self.processor, "image_token", "<image>")
        return f"USER: {token}\n{request} ASSISTANT:"

    @torch.no_grad()
    def caption_batch(self, samples: list[Sample]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            images = []
            for sample in chunk:
                try:
                    images.append(_display_image(sample, self.spec))
                except DataError as err:
                    raise DataError(
                        f"sample {sample.id!r}", f"the captioning model cannot read its image ({err})"
                    ) from None
            inputs = self.processor(
                images=images, text=[self._text(s) for s in chunk], padding=True, return_tensors="pt"
            )
            inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
            out += [" ".join(t.split()) for t in texts]
        return out


def describe(captioner: Any) -> dict[str, str]:
    """Identity of a captioner for the cache key and the report."""
    return {"source": captioner.source, "model": captioner.model_id, "prompt": captioner.prompt}

"""What the UNet is conditioned on: one home for the text encoder and the caption and layout limits."""

from __future__ import annotations

from pydantic import Field

from diffx.errors import ConfigError
from diffx.section import Section


class ConditioningConfig(Section):
    """What the UNet is conditioned on. Refine, the captions and ingest gates, the planner and the UNet all read
    these limits from here, so a caption that passes the gate is never truncated in training."""

    text_encoder: str = Field(
        default="minilm", description="minilm | clip:<path> | longclip:<checkpoint> (paper: Long-CLIP)"
    )
    text_tokenizer: str | None = Field(default=None, description="tokenizer folder (longclip)")
    max_tokens: int | None = Field(
        default=96, ge=8, description="caption tokens the UNet sees; null = the encoder's whole context (paper: 248)"
    )
    max_objects: int = Field(default=30, ge=1, description="layout slots of the UNet (GLIGEN: 30)")
    mask_caption_padding: bool = Field(
        default=True,
        description="hide caption padding from the UNet's cross-attention and the JME; false = attend to every "
        "position, the empty unconditional caption's too, as SD and the original DiffX code do (paper presets)",
    )

    def tokenizer(self) -> str:
        """The tokenizer that counts caption tokens exactly as the text encoder will."""
        kind, _, target = self.text_encoder.partition(":")
        if kind == "minilm":
            return "minilm"
        if self.text_tokenizer:
            return self.text_tokenizer
        if kind == "clip":
            return target
        raise ConfigError(f"conditioning.text_tokenizer: {self.text_encoder!r} needs a tokenizer folder")

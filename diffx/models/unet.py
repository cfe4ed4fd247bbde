"""DiffX-UNet: diffusers' UNet2DConditionModel with GLIGEN gated fusers fed by our layout tokens + JME.

``attention_type="gated"`` gives every transformer block of the UNet a gated self-attention fuser
(visual tokens attend over [visual; Linear(layout tokens)], added through tanh(alpha), alpha = 0 at
init). diffusers would build the layout tokens with its own ``position_net``; ours replaces it with a
pass-through and builds them here: box or dense tokenizer -> Joint-Modality Embedder over the caption.
Dense layouts also enter as extra, zero-initialised input channels, and so do boxes when
``box_raster_channels`` > 0 (each box's class embedding painted at latent resolution, models/layout.py
``BoxRaster``). At initialisation every gate is 0 and every new input channel is 0, so the model computes
exactly what its base UNet computes, for any layout. ``layout_tokens=False`` builds the UNet without fusers,
tokenizer or JME: the layout enters through the input channels alone (the raster-only ablation of issue #36).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from diffx.errors import ConfigError
from diffx.models.jme import JointModalityEmbedder
from diffx.models.layout import BoxRaster, BoxTokenizer, DenseDownsampler, DenseTokenizer


@dataclass
class LayoutConditioning:
    """What a layout and caption give every denoising step: the fusers' tokens and, for a dense layout, the
    extra latent channels; for painted boxes, what to paint (boxes, their values, mask), painted at the size of
    the latent each step brings. Built once per batch by ``DiffXUNet.condition``; a sampler reuses it every step."""

    tokens: torch.Tensor | None
    dense_channels: torch.Tensor | None = None
    box_paint: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    painted: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def extra_channels(self, size: tuple[int, int]) -> torch.Tensor | None:
        """The input channels concatenated to a latent of ``size`` (h, w), or None for a tokens-only layout.

        Painted once per size: a sampler asks every step for the same latent size."""
        if self.box_paint is not None:
            if size not in self.painted:
                self.painted[size] = BoxRaster.paint(*self.box_paint, size)
            return self.painted[size]
        return self.dense_channels


class PassThroughPositionNet(nn.Module):
    """Stands where diffusers' GLIGEN position net would: the tokens arrive already built."""

    def forward(self, objs: torch.Tensor) -> torch.Tensor:
        return objs


class DiffXUNet(ModelMixin, ConfigMixin):
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        latent_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        layers_per_block: int = 2,
        attention_head_dim: int | tuple[int, ...] = 8,
        cross_attention_dim: int = 768,
        norm_num_groups: int = 32,
        phrase_dim: int = 768,
        layout: Literal["boxes", "dense"] = "boxes",
        max_objects: int = 30,
        dense_channels: int = 1,
        dense_latent_channels: int = 8,
        dense_factor: int = 8,
        jme_heads: int = 8,
        box_raster_channels: int = 0,
        layout_tokens: bool = True,
    ):
        super().__init__()
        if not layout_tokens and layout == "boxes" and not box_raster_channels:
            raise ConfigError("layout_tokens=False with box_raster_channels=0: the boxes would not reach the UNet")
        painted = box_raster_channels + 1 if box_raster_channels else 0  # class-embedding channels + coverage
        extra = dense_latent_channels if layout == "dense" else painted
        self.unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=latent_channels + extra,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            norm_num_groups=norm_num_groups,
            attention_type="gated" if layout_tokens else "default",
        )
        self.unet.position_net = PassThroughPositionNet()
        if extra:
            with torch.no_grad():
                self.unet.conv_in.weight[:, latent_channels:] = 0
        if layout == "boxes":
            if layout_tokens:
                self.box_tokenizer = BoxTokenizer(phrase_dim, cross_attention_dim)
            if box_raster_channels:
                self.box_raster = BoxRaster(phrase_dim, box_raster_channels)
        else:
            if layout_tokens:
                self.dense_tokenizer = DenseTokenizer(dense_channels, cross_attention_dim)
            self.dense_downsampler = DenseDownsampler(dense_channels, dense_latent_channels, dense_factor)
        if layout_tokens:
            self.jme = JointModalityEmbedder(
                cross_attention_dim, cross_attention_dim, heads=max(1, min(jme_heads, cross_attention_dim // 8))
            )

    @torch.no_grad()
    def set_fuser_gates(self, gamma: float) -> None:
        """Set every gated fuser's attention and feed-forward gate (GLIGEN initialises them to 0)."""
        for module in self.unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.alpha_attn.fill_(gamma)
                module.alpha_dense.fill_(gamma)

    # ------------------------------------------------------------------------------------------ forward
    def condition(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        phrases: torch.Tensor | None = None,
        box_mask: torch.Tensor | None = None,
        dense: torch.Tensor | None = None,
    ) -> LayoutConditioning:
        """Everything of the layout that no timestep changes (tokens + JME, dense input channels, what painted
        boxes paint)."""
        paint, tokens, channels = None, None, None
        with_tokens = self.config.layout_tokens
        if self.config.layout == "boxes":
            if boxes is None or phrases is None or box_mask is None:
                raise ValueError("a box layout needs boxes, phrases and box_mask (all-zero mask = no layout)")
            tokens = self.box_tokenizer(boxes, phrases, box_mask) if with_tokens else None
            if self.config.box_raster_channels:
                paint = (boxes, self.box_raster.values(phrases), box_mask)
        else:
            if dense is None:
                raise ValueError("a dense layout needs the dense map (zeros = no layout)")
            tokens = self.dense_tokenizer(dense) if with_tokens else None
            channels = self.dense_downsampler(dense)
        fused = self.jme(tokens, text_states, text_mask) if tokens is not None else None
        return LayoutConditioning(fused, channels, paint)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        *,
        boxes: torch.Tensor | None = None,
        phrases: torch.Tensor | None = None,
        box_mask: torch.Tensor | None = None,
        dense: torch.Tensor | None = None,
        conditioning: LayoutConditioning | None = None,
    ) -> torch.Tensor:
        """Predicted noise for ``sample`` (B x latent x h x w) at ``timestep``; ``conditioning`` (from
        ``condition``) stands for the layout arguments when a sampler has built it once for every step."""
        if conditioning is None:
            conditioning = self.condition(
                text_states, text_mask, boxes=boxes, phrases=phrases, box_mask=box_mask, dense=dense
            )
        extra = conditioning.extra_channels(tuple(sample.shape[-2:]))
        if extra is not None:
            sample = torch.cat([sample, extra.to(sample.dtype)], dim=1)
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states=text_states,
            encoder_attention_mask=text_mask,
            cross_attention_kwargs=None if conditioning.tokens is None else {"gligen": {"objs": conditioning.tokens}},
        ).sample

    # ------------------------------------------------------------------------------------------ base
    def base_parameter_names(self) -> set[str]:
        """Parameters of the plain SD UNet (what the paper freezes); fusers and layout parts are new."""
        return {f"unet.{n}" for n, _ in self.unet.named_parameters() if ".fuser." not in n}

    def freeze_base(self) -> None:
        base = self.base_parameter_names()
        for name, param in self.named_parameters():
            param.requires_grad_(name not in base)
        if self.config.layout == "dense" or self.config.box_raster_channels:  # the widened input conv learns them
            self.unet.conv_in.weight.requires_grad_(True)

    @classmethod
    def from_sd(
        cls,
        path: str,
        *,
        layout: Literal["boxes", "dense"] = "boxes",
        phrase_dim: int | None = None,
        dense_channels: int = 1,
        box_raster_channels: int = 0,
        layout_tokens: bool = True,
        freeze: bool = True,
    ) -> DiffXUNet:
        """Load an SD v1.x UNet folder (``<pipeline>/unet`` or the UNet folder itself) as the frozen base."""
        from pathlib import Path

        folder = Path(path) / "unet" if (Path(path) / "unet" / "config.json").is_file() else Path(path)
        try:
            base = UNet2DConditionModel.from_pretrained(str(folder))
        except OSError as err:
            raise ConfigError(f"{path}: not a diffusers UNet folder ({err})") from None
        c = base.config
        model = cls(
            sample_size=c.sample_size,
            latent_channels=c.in_channels,
            block_out_channels=tuple(c.block_out_channels),
            down_block_types=tuple(c.down_block_types),
            up_block_types=tuple(c.up_block_types),
            layers_per_block=c.layers_per_block,
            attention_head_dim=c.attention_head_dim,
            cross_attention_dim=c.cross_attention_dim,
            norm_num_groups=c.norm_num_groups,
            phrase_dim=phrase_dim or c.cross_attention_dim,
            layout=layout,
            dense_channels=dense_channels,
            box_raster_channels=box_raster_channels,
            layout_tokens=layout_tokens,
        )
        state = base.state_dict()
        conv_in = state.pop("conv_in.weight")
        own = model.unet.state_dict()
        own_conv = own["conv_in.weight"].clone()
        own_conv[:, : conv_in.shape[1]] = conv_in
        own_conv[:, conv_in.shape[1] :] = 0
        state["conv_in.weight"] = own_conv
        missing, unexpected = model.unet.load_state_dict(state, strict=False)
        missing = [k for k in missing if ".fuser." not in k]
        if missing or unexpected:
            raise ConfigError(f"{path}: UNet weights do not fit (missing {missing[:4]}, unexpected {unexpected[:4]})")
        if freeze:
            model.freeze_base()
        return model

"""MP-VAE: the multi-path autoencoder that maps any list of aligned modalities to one shared latent.

Structure (DiffX, section 3.1, generalised from the original's separate 2/3/4-modality scripts):

* one stem per modality (Conv3x3 -> GroupNorm -> SiLU) whose outputs are *summed* into one SD-style
  encoder trunk, so adding a modality adds a stem and a decoder, never a new architecture;
* a Laplacian pyramid of all modalities beside the trunk: at encoder level ``i`` the band of every
  modality at that level's resolution is concatenated, projected to the level's width and *added after
  every ResBlock* of the level (switchable, so the paper's ablation can be rerun);
* one diagonal-Gaussian latent (``latent_channels`` x H/8 x W/8 for four levels), read by one SD-style
  decoder per modality (the paper), or by one shared decoder whose last conv has every modality's channels
  (``decoder="shared"``): the modalities are aligned, so their edges and layout are one structure to decode;
  a shared trunk costs a third of three decoders on RGB+T+D and learns from every modality's gradient.

The trunk's module names match ``AutoencoderKL.encoder`` so :meth:`MPVAE.from_sd_vae` copies SD v1.x
weights by name. ``scaling_factor`` is estimated from the training data (1 / std of the latents), not
reused from SD, and travels with the model in ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from torch import nn

from diffx.errors import ConfigError

SHARED = "shared"  # key of the one decoder of decoder="shared"


@dataclass
class MPVAEOutput:
    """What one forward pass gives the training loop: every reconstruction and the posterior."""

    reconstructions: dict[str, torch.Tensor]
    posterior: DiagonalGaussianDistribution


def laplacian_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass images at full, 1/2, 1/4 ... resolution; the last level keeps the low-pass residual.

    Bicubic down/up as in the original; sizes follow the encoder's own downsampling (ceil for odd sizes)
    so each band lines up with the feature map it is added to.
    """
    bands: list[torch.Tensor] = []
    current = image
    for _ in range(levels - 1):
        h, w = current.shape[-2:]
        smaller = F.interpolate(current, size=((h + 1) // 2, (w + 1) // 2), mode="bicubic", align_corners=False)
        bands.append(current - F.interpolate(smaller, size=(h, w), mode="bicubic", align_corners=False))
        current = smaller
    bands.append(current)
    return bands


class _ConvNormAct(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.GroupNorm(groups, out_channels, eps=1e-6),
            nn.SiLU(),
        )


class MultiPathEncoder(nn.Module):
    """SD's encoder trunk without ``conv_in``: stems replace it, and pyramid features enter per level."""

    def __init__(
        self,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        latent_channels: int,
        norm_num_groups: int,
        mid_block_add_attention: bool,
    ):
        super().__init__()
        self.down_blocks = nn.ModuleList()
        output_channel = block_out_channels[0]
        for i, channels in enumerate(block_out_channels):
            input_channel, output_channel = output_channel, channels
            self.down_blocks.append(
                get_down_block(
                    "DownEncoderBlock2D",
                    num_layers=layers_per_block,
                    in_channels=input_channel,
                    out_channels=output_channel,
                    add_downsample=i < len(block_out_channels) - 1,
                    resnet_eps=1e-6,
                    downsample_padding=0,
                    resnet_act_fn="silu",
                    resnet_groups=norm_num_groups,
                    attention_head_dim=output_channel,
                    temb_channels=None,
                )
            )
        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            resnet_eps=1e-6,
            resnet_act_fn="silu",
            output_scale_factor=1,
            resnet_time_scale_shift="default",
            attention_head_dim=block_out_channels[-1],
            resnet_groups=norm_num_groups,
            temb_channels=None,
            add_attention=mid_block_add_attention,
        )
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[-1], num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, hidden: torch.Tensor, level_features: list[torch.Tensor] | None) -> torch.Tensor:
        for level, block in enumerate(self.down_blocks):
            for resnet in block.resnets:
                hidden = resnet(hidden, None)
                if level_features is not None:
                    hidden = hidden + level_features[level]
            if block.downsamplers is not None:
                for down in block.downsamplers:
                    hidden = down(hidden)
        hidden = self.mid_block(hidden)
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden)))


class MPVAE(ModelMixin, ConfigMixin):
    """Multi-path VAE over ``modalities`` (an ordered list of names) with ``channels`` per modality."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        modalities: tuple[str, ...] = ("rgb", "thermal"),
        channels: tuple[int, ...] = (3, 1),
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        use_pyramid: bool = True,
        replicate_grey: bool = False,
        mid_block_add_attention: bool = True,
        scaling_factor: float = 0.18215,
        decoder: Literal["per_modality", "shared"] = "per_modality",
        posterior_logvar_init: float = 0.0,
    ):
        super().__init__()
        if len(modalities) != len(channels) or not modalities:
            raise ConfigError(f"MPVAE: {len(modalities)} modalities but {len(channels)} channel counts")
        if len(set(modalities)) != len(modalities):
            raise ConfigError(f"MPVAE: modality names must be unique, got {list(modalities)}")
        width = block_out_channels[0]
        self.stems = nn.ModuleDict(
            {
                name: _ConvNormAct(self._in_channels(c), width, norm_num_groups)
                for name, c in zip(modalities, channels, strict=True)
            }
        )
        self.encoder = MultiPathEncoder(
            tuple(block_out_channels), layers_per_block, latent_channels, norm_num_groups, mid_block_add_attention
        )
        pyramid_in = sum(self._in_channels(c) for c in channels)
        self.pyramid = nn.ModuleList(
            [_ConvNormAct(pyramid_in, c, norm_num_groups) for c in block_out_channels] if use_pyramid else []
        )
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        if posterior_logvar_init:
            # A fresh posterior has log-variance ~0: latent noise as large as the signal, which the decoder must
            # wait out until the encoder learns to shrink it (the KL weight is ~1e-6). Starting narrow skips that.
            with torch.no_grad():
                self.quant_conv.bias[latent_channels:] += posterior_logvar_init
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)

        def sd_decoder(out_channels: int) -> Decoder:
            return Decoder(
                in_channels=latent_channels,
                out_channels=out_channels,
                up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
                block_out_channels=tuple(block_out_channels),
                layers_per_block=layers_per_block,
                norm_num_groups=norm_num_groups,
                act_fn="silu",
                mid_block_add_attention=mid_block_add_attention,
            )

        if decoder == "shared":
            self.decoders = nn.ModuleDict({SHARED: sd_decoder(sum(channels))})
        elif decoder == "per_modality":
            self.decoders = nn.ModuleDict({name: sd_decoder(c) for name, c in zip(modalities, channels, strict=True)})
        else:
            raise ConfigError(f"MPVAE: decoder must be 'per_modality' or 'shared', got {decoder!r}")

    # ----------------------------------------------------------------------------- helpers
    def _in_channels(self, channels: int) -> int:
        return 3 if (channels == 1 and self.config.replicate_grey) else channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _inputs(self, images: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        names = list(self.config.modalities)
        if set(images) != set(names):
            raise ValueError(f"MPVAE expects modalities {names}, got {sorted(images)}")
        out = []
        for name, channels in zip(names, self.config.channels, strict=True):
            x = images[name]
            if x.shape[1] != channels:
                raise ValueError(f"modality {name!r}: expected {channels} channel(s), got {x.shape[1]}")
            out.append(x.repeat(1, 3, 1, 1) if self._in_channels(channels) != channels else x)
        return out

    # ----------------------------------------------------------------------------- encode / decode
    def encode(self, images: dict[str, torch.Tensor]) -> DiagonalGaussianDistribution:
        """``images``: name -> B x C x H x W in [-1, 1]; H and W divisible by the downsample factor."""
        inputs = self._inputs(images)
        h, w = inputs[0].shape[-2:]
        if h % self.downsample_factor or w % self.downsample_factor:
            raise ValueError(f"image size {w}x{h} must be divisible by {self.downsample_factor}")
        hidden = sum(stem(x) for stem, x in zip(self.stems.values(), inputs, strict=True))
        level_features = None
        if self.config.use_pyramid:
            per_modality = [laplacian_pyramid(x, len(self.pyramid)) for x in inputs]
            level_features = [
                proj(torch.cat([bands[i] for bands in per_modality], dim=1)) for i, proj in enumerate(self.pyramid)
            ]
        moments = self.quant_conv(self.encoder(hidden, level_features))
        return DiagonalGaussianDistribution(moments)

    def decode(self, latents: torch.Tensor, modalities: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Every requested modality from the one latent (unscaled: divide by scaling_factor first)."""
        z = self.post_quant_conv(latents)
        names = modalities or list(self.config.modalities)
        if self.config.decoder == "shared":
            every = torch.split(self.decoders[SHARED](z), list(self.config.channels), dim=1)
            return {name: every[self.config.modalities.index(name)] for name in names}
        return {name: self.decoders[name](z) for name in names}

    def forward(self, images: dict[str, torch.Tensor], noise: torch.Tensor | None = None) -> MPVAEOutput:
        """Reconstruct from ``mean + std * noise``; no noise means the posterior mode (evaluation)."""
        posterior = self.encode(images)
        z = posterior.mean if noise is None else posterior.mean + posterior.std * noise
        return MPVAEOutput(self.decode(z), posterior)

    # ----------------------------------------------------------------------------- SD initialisation
    @classmethod
    def from_sd_vae(
        cls,
        path: str,
        modalities: tuple[str, ...],
        channels: tuple[int, ...],
        *,
        use_pyramid: bool = True,
        replicate_grey: bool = False,
        decoder: Literal["per_modality", "shared"] = "per_modality",
    ) -> MPVAE:
        """Initialise from a diffusers ``AutoencoderKL`` folder (SD v1.x), as the original DiffX did.

        The SD encoder trunk is copied as is; every modality's stem starts from SD's ``conv_in`` and every
        decoder is a copy of SD's decoder (a shared decoder: one copy whose output filters are SD's RGB ones
        per modality). For a 1-channel modality the 3 RGB filters are summed on the way in (the same response
        as replicating grey to RGB) and averaged on the way out.
        """
        from pathlib import Path

        from diffusers import AutoencoderKL

        folder = Path(path) / "vae" if (Path(path) / "vae" / "config.json").is_file() else Path(path)
        sd = AutoencoderKL.from_pretrained(str(folder))  # an SD pipeline folder or its vae/ folder
        sd_config = sd.config
        model = cls(
            modalities=tuple(modalities),
            channels=tuple(channels),
            block_out_channels=tuple(sd_config.block_out_channels),
            layers_per_block=sd_config.layers_per_block,
            latent_channels=sd_config.latent_channels,
            norm_num_groups=sd_config.norm_num_groups,
            use_pyramid=use_pyramid,
            replicate_grey=replicate_grey,
            mid_block_add_attention=getattr(sd_config, "mid_block_add_attention", True),
            scaling_factor=sd_config.scaling_factor,
            decoder=decoder,
        )
        state = sd.state_dict()
        trunk = {
            k.removeprefix("encoder."): v
            for k, v in state.items()
            if k.startswith("encoder.") and not k.startswith("encoder.conv_in.")
        }
        model.encoder.load_state_dict(trunk, strict=True)
        if sd.quant_conv is not None:
            model.quant_conv.load_state_dict(sd.quant_conv.state_dict())
        if sd.post_quant_conv is not None:
            model.post_quant_conv.load_state_dict(sd.post_quant_conv.state_dict())
        conv_in_w, conv_in_b = state["encoder.conv_in.weight"], state["encoder.conv_in.bias"]
        decoder_state = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}

        def output_filters(c: int) -> dict[str, torch.Tensor]:
            if c == 3:
                return {k: decoder_state[f"conv_out.{k}"] for k in ("weight", "bias")}
            grey = {k: decoder_state[f"conv_out.{k}"].mean(dim=0, keepdim=True) for k in ("weight", "bias")}
            return {k: v.repeat(c, *([1] * (v.ndim - 1))) for k, v in grey.items()}

        with torch.no_grad():
            for name, c in zip(modalities, channels, strict=True):
                stem_conv = model.stems[name][0]
                grey_in = model._in_channels(c) == 1
                stem_conv.weight.copy_(conv_in_w.sum(dim=1, keepdim=True) if grey_in else conv_in_w)
                stem_conv.bias.copy_(conv_in_b)
            heads = {name: output_filters(c) for name, c in zip(modalities, channels, strict=True)}
            if decoder == "shared":
                merged = {k: torch.cat([h[k] for h in heads.values()]) for k in ("weight", "bias")}
                own = {**decoder_state, **{f"conv_out.{k}": v for k, v in merged.items()}}
                model.decoders[SHARED].load_state_dict(own, strict=True)
            else:
                for name, head in heads.items():
                    own = {**decoder_state, **{f"conv_out.{k}": v for k, v in head.items()}}
                    model.decoders[name].load_state_dict(own, strict=True)
        return model

    def check_modalities(self, modalities: tuple[str, ...], channels: tuple[int, ...], source: str) -> None:
        """Refuse a checkpoint made for another modality set, naming both lists."""
        mine = list(zip(self.config.modalities, self.config.channels, strict=True))
        theirs = list(zip(modalities, channels, strict=True))
        if mine != theirs:
            raise ConfigError(f"{source}: the MP-VAE was trained for modalities {mine}, the config asks for {theirs}")

"""Layout tokenizers: boxes (GLIGEN-style) and dense maps, both producing tokens for the gated fusers.

Boxes: each slot is a phrase embedding (the class name through the text encoder) concatenated with a
Fourier embedding of its normalised box (8 frequencies 100^(k/8), sin and cos of 4 coordinates = 64), then
an MLP. Empty slots (mask 0) use learned null vectors, which is also how a dropped layout looks, so
classifier-free guidance over the layout needs no special path. Slots are a set: no slot order enters.

Boxes can also be painted (``BoxRaster``): each box's class embedding rasterised at latent resolution and
concatenated to the noisy latent through new, zero-initialised input channels, the path dense layouts take.
Tokens tell the fusers what and roughly where; the raster tells every convolution exactly which cells.

Dense maps (segmentation ids, saliency, edges, face renderings): a small ConvNeXt-style encoder on a
fixed-size resize gives a grid of tokens, and a 2-conv downsampler gives extra latent-resolution channels
that are concatenated to the noisy latent (the UNet's new input channels start at zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fourier_embed(boxes: torch.Tensor, num_freqs: int = 8, temperature: float = 100.0) -> torch.Tensor:
    """B x N x 4 boxes in [0, 1] -> B x N x (4 * 2 * num_freqs)."""
    freqs = temperature ** (torch.arange(num_freqs, device=boxes.device, dtype=boxes.dtype) / num_freqs)
    angles = boxes.unsqueeze(-1) * freqs  # B x N x 4 x F
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(2)


class BoxTokenizer(nn.Module):
    def __init__(self, phrase_dim: int, out_dim: int, num_freqs: int = 8, hidden: int = 512):
        super().__init__()
        self.num_freqs = num_freqs
        position_dim = 4 * 2 * num_freqs
        self.null_phrase = nn.Parameter(torch.zeros(phrase_dim))
        self.null_position = nn.Parameter(torch.zeros(position_dim))
        self.mlp = nn.Sequential(
            nn.Linear(phrase_dim + position_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, boxes: torch.Tensor, phrases: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """boxes B x N x 4 (x0 y0 x1 y1 in [0, 1]), phrases B x N x P, mask B x N (1 = a real object)."""
        keep = mask.unsqueeze(-1).to(phrases.dtype)
        positions = fourier_embed(boxes.to(phrases.dtype), self.num_freqs)
        phrases = keep * phrases + (1 - keep) * self.null_phrase
        positions = keep * positions + (1 - keep) * self.null_position
        return self.mlp(torch.cat([phrases, positions], dim=-1))


class BoxRaster(nn.Module):
    """Planned boxes painted at latent resolution, for the UNet's zero-initialised extra input channels.

    Each box carries a learned projection of its phrase (the class-name embedding) into ``channels`` values, plus
    one coverage channel. Coverage is fractional (the share of a latent cell the box covers), so an object one
    or two cells wide still leaves a mark; where boxes overlap they are composited front to back with the smaller
    box in front (alpha compositing over cells), a fixed order that does not depend on slot order. Empty slots
    (mask 0), and so a dropped layout, paint nothing: the unconditional branch of guidance sees all zeros.
    """

    def __init__(self, phrase_dim: int, channels: int):
        super().__init__()
        self.project = nn.Linear(phrase_dim, channels)

    def values(self, phrases: torch.Tensor) -> torch.Tensor:
        """B x N x P phrases -> B x N x channels (what each box paints); computed once per batch."""
        return self.project(phrases)

    @staticmethod
    def paint(boxes: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """B x (channels + 1) x h x w from boxes B x N x 4 in [0, 1], values B x N x C, mask B x N."""
        height, width = size
        dtype = values.dtype
        cells_y = torch.arange(height, device=boxes.device, dtype=dtype)
        cells_x = torch.arange(width, device=boxes.device, dtype=dtype)
        x0, y0, x1, y1 = (boxes[..., k].to(dtype) for k in range(4))  # B x N
        cover_x = torch.minimum(x1[..., None] * width, cells_x + 1) - torch.maximum(x0[..., None] * width, cells_x)
        cover_y = torch.minimum(y1[..., None] * height, cells_y + 1) - torch.maximum(y0[..., None] * height, cells_y)
        alpha = cover_y.clamp(0, 1)[..., :, None] * cover_x.clamp(0, 1)[..., None, :]  # B x N x h x w
        alpha = alpha * mask.to(dtype)[..., None, None]
        area = (x1 - x0) * (y1 - y0)
        area = torch.where(mask > 0, area, torch.full_like(area, float("inf")))
        order = area.argsort(dim=1, stable=True)  # smallest first: in front
        alpha = alpha.gather(1, order[..., None, None].expand_as(alpha))
        values = values.gather(1, order[..., None].expand_as(values))
        transmitted = torch.cumprod(1 - alpha, dim=1)
        in_front = torch.cat([torch.ones_like(alpha[:, :1]), transmitted[:, :-1]], dim=1)
        weight = alpha * in_front  # B x N x h x w: how much of each cell each box shows
        painted = torch.einsum("bnhw,bnc->bchw", weight, values)
        return torch.cat([painted, weight.sum(dim=1, keepdim=True)], dim=1)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.GroupNorm(1, dim)
        self.pointwise = nn.Sequential(nn.Conv2d(dim, 4 * dim, 1), nn.GELU(), nn.Conv2d(4 * dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(self.norm(self.depthwise(x)))


class DenseTokenizer(nn.Module):
    """Dense map -> ``grid**2`` tokens (ConvNeXt-style stages on a ``size``-pixel resize)."""

    def __init__(self, in_channels: int, out_dim: int, width: int = 64, size: int = 256, grid: int = 8):
        super().__init__()
        self.size, self.grid = size, grid
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 4, stride=4), nn.GroupNorm(1, width))
        self.stages = nn.Sequential(
            _ConvNeXtBlock(width),
            nn.Conv2d(width, 2 * width, 2, stride=2),
            _ConvNeXtBlock(2 * width),
            nn.Conv2d(2 * width, 4 * width, 2, stride=2),
            _ConvNeXtBlock(4 * width),
        )
        self.project = nn.Linear(4 * width, out_dim)
        self.position = nn.Parameter(torch.zeros(grid * grid, out_dim))

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(dense, size=(self.size, self.size), mode="nearest")
        x = F.adaptive_avg_pool2d(self.stages(self.stem(x)), self.grid)
        return self.project(x.flatten(2).transpose(1, 2)) + self.position


class DenseDownsampler(nn.Module):
    """Dense map -> ``out_channels`` at latent resolution (/``factor``, the VAE's), concatenated to the noisy
    latent."""

    def __init__(self, in_channels: int, out_channels: int = 8, factor: int = 8):
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"the VAE's downsample factor must be a power of 2, at least 2; got {factor}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, factor // 2, stride=factor // 2),
            nn.SiLU(),
            nn.Conv2d(16, out_channels, 3, stride=2, padding=1),
        )

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.net(dense)


def pack_boxes(
    boxes: list[torch.Tensor], labels: list[torch.Tensor], sizes: list[tuple[int, int]], max_objects: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample pixel boxes (N x 4) and class ids -> (B x S x 4 in [0, 1], B x S ids, B x S mask).

    Boxes beyond ``max_objects`` are dropped, largest kept, so the model's slot budget never breaks a batch.
    ``sizes`` are (height, width) per sample.
    """
    count = len(boxes)
    packed = torch.zeros(count, max_objects, 4)
    ids = torch.zeros(count, max_objects, dtype=torch.long)
    mask = torch.zeros(count, max_objects)
    for i, (b, lab, (height, width)) in enumerate(zip(boxes, labels, sizes, strict=True)):
        if len(b) > max_objects:
            areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            keep = areas.argsort(descending=True)[:max_objects].sort().values
            b, lab = b[keep], lab[keep]
        n = len(b)
        if n:
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            packed[i, :n] = (b.float() / scale).clamp(0, 1)
            ids[i, :n] = lab
            mask[i, :n] = 1
    return packed, ids, mask

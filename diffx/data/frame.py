"""The frame policy: resize + crop moving images, boxes and dense layouts together.

Real sets come at real sizes (LLVIP 1280x1024, SUN RGB-D 640x480 and 730x530, FLIR 640x512); a model trains
at one resolution. Every reader of pixels for a model applies the same two steps from the dataset's
``FrameSpec``: resize so the short side is ``resolution`` (bilinear, antialiased; segmentation ids nearest),
then crop. Crop offsets lie on the VAE's 8-px grid: a latent of the whole resized frame cropped at
``offset // 8`` covers exactly the crop's pixels, and the UNet's cached latents crop like the pixels do (away
from the crop's border the values equal the crop's own latent; at the border the encoder saw the scene
beyond it, as a cut from a larger frame rather than a frame padded at its edge).

Boxes are scaled, shifted, clipped to the crop and dropped when less than ``min_box_visible`` of their area
stays inside (or a side falls under 2 px): a layout never asks for an object the frame cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffx.data.boxes import MIN_SIDE_PX
from diffx.data.spec import FrameSpec

GRID = 8  # the VAE's downsampling factor: crop offsets and sizes stay on it


@dataclass(frozen=True)
class Placement:
    """Where a stored frame lands in the model's frame: resized size, then the crop window inside it."""

    scale_x: float
    scale_y: float
    resized: tuple[int, int]  # (height, width) after the resize
    top: int
    left: int
    height: int
    width: int

    def latent_window(self, factor: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop in the latent of the resized frame (``factor`` px per cell;
        offsets lie on the 8-px grid, so any factor dividing 8 crops exactly)."""
        if GRID % factor:
            raise ValueError(f"a latent of factor {factor} cannot be cropped on the {GRID}-px grid")
        return self.top // factor, self.left // factor, self.height // factor, self.width // factor


def resized_size(height: int, width: int, frame: FrameSpec) -> tuple[int, int]:
    if frame.resolution is None:
        return height, width
    short = min(height, width)
    if height == short:
        return frame.resolution, max(frame.resolution, round(width * frame.resolution / short))
    return max(frame.resolution, round(height * frame.resolution / short)), frame.resolution


def _window(height: int, width: int, frame: FrameSpec) -> tuple[tuple[int, int], tuple[int, int], int, int]:
    """(resized size, crop size, free crop positions down, across): positions counted in 8-px grid cells."""
    rh, rw = resized_size(height, width, frame)
    if frame.resolution is None:
        ch, cw = rh, rw
    elif frame.crop == "square":
        ch = cw = frame.resolution
    else:
        ch, cw = rh // GRID * GRID, rw // GRID * GRID
    return (rh, rw), (ch, cw), (rh - ch) // GRID, (rw - cw) // GRID


def place(height: int, width: int, frame: FrameSpec, generator: torch.Generator | None = None) -> Placement:
    """The resize and crop for one frame: at random (on the 8-px grid) with a generator, else centred.

    With no resolution the frame is kept as stored (the crop is the whole frame), as before frames had a policy.
    """
    (rh, rw), (ch, cw), slack_y, slack_x = _window(height, width, frame)
    if generator is not None and (slack_y or slack_x):
        top = int(torch.randint(0, slack_y + 1, (), generator=generator)) * GRID
        left = int(torch.randint(0, slack_x + 1, (), generator=generator)) * GRID
    else:
        top, left = slack_y // 2 * GRID, slack_x // 2 * GRID
    return Placement(rw / width, rh / height, (rh, rw), top, left, ch, cw)


def resize_only(height: int, width: int, frame: FrameSpec) -> Placement:
    """Every crop ``place`` can choose, at once: the resized frame cut to the grid cells the crops can reach.

    A latent of this window cropped at ``Placement.latent_window`` is where any training crop lies (the
    UNet's cached latents); the far edge a crop can never reach (under 8 px) is left out.
    """
    (rh, rw), (ch, cw), slack_y, slack_x = _window(height, width, frame)
    return Placement(rw / width, rh / height, (rh, rw), 0, 0, slack_y * GRID + ch, slack_x * GRID + cw)


def resize_image(image: torch.Tensor, size: tuple[int, int], *, nearest: bool = False) -> torch.Tensor:
    """C x H x W float -> C x size; identity when the size already matches (no resampling of stored frames)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if nearest:
        return F.interpolate(image[None], size=size, mode="nearest-exact")[0]
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def crop_image(image: torch.Tensor, placement: Placement) -> torch.Tensor:
    p = placement
    return image[..., p.top : p.top + p.height, p.left : p.left + p.width]


def place_image(image: torch.Tensor, placement: Placement, *, nearest: bool = False) -> torch.Tensor:
    return crop_image(resize_image(image, placement.resized, nearest=nearest), placement)


def place_boxes(
    boxes: torch.Tensor, labels: torch.Tensor, placement: Placement, min_visible: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """N x 4 pixel boxes of the stored frame -> boxes of the model's frame (clipped; cut-off ones dropped)."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4), labels
    p = placement
    scale = torch.tensor([p.scale_x, p.scale_y, p.scale_x, p.scale_y], dtype=torch.float32)
    shift = torch.tensor([p.left, p.top, p.left, p.top], dtype=torch.float32)
    moved = boxes.float() * scale - shift
    limit = torch.tensor([p.width, p.height, p.width, p.height], dtype=torch.float32)
    clipped = torch.minimum(moved.clamp(min=0), limit)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (
        (inside >= min_visible * area)
        & (clipped[:, 2] - clipped[:, 0] >= MIN_SIDE_PX)
        & (clipped[:, 3] - clipped[:, 1] >= MIN_SIDE_PX)
    )
    return clipped[keep], labels[keep]

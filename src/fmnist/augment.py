"""Batched, seeded data augmentation with tensor ops: no per-image Python loop.

Every function takes a float batch ``images`` of shape (N, 1, 28, 28) in [0, 1] with a
black (0) background, which is also the fill value for pixels moved in from outside,
and a ``torch.Generator`` so a run is reproducible and resumable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fmnist.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply to each training batch, and how strongly."""

    enabled: bool = True
    rotate_degrees: float = 10.0  # uniform in [-d, d]; the original used 10
    shift_fraction: float = 0.1  # uniform shift up to this fraction of the side, per axis
    flip: bool = False  # horizontal flip with p=0.5 (garments are left-right symmetric)
    # With flip: each image's flip alternates between epochs (airbench's alternating
    # flips) instead of a fresh coin each time, so every pair of epochs sees both sides.
    flip_alternate: bool = False
    crop_padding: int = 0  # random crop after zero-padding by this many pixels (integer shifts)
    erase_probability: float = 0.0  # random erasing (Zhong et al. 2017) per image
    erase_scale: tuple[float, float] = (0.02, 0.25)  # erased area as a fraction of the image

    def validate(self) -> None:
        if not 0 <= self.rotate_degrees <= 180:
            raise ConfigError(f"rotate_degrees must be 0-180, got {self.rotate_degrees}")
        if not 0 <= self.shift_fraction < 0.5:
            raise ConfigError(f"shift_fraction must be in [0, 0.5), got {self.shift_fraction}")
        if not 0 <= self.crop_padding <= 14:
            raise ConfigError(f"crop_padding must be 0-14 pixels, got {self.crop_padding}")
        if self.flip_alternate and not self.flip:
            raise ConfigError("flip_alternate needs flip", "set augment.flip true, or flip_alternate false")
        if not 0 <= self.erase_probability <= 1:
            raise ConfigError(f"erase_probability must be in [0, 1], got {self.erase_probability}")


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator) * (high - low) + low


def random_affine(
    images: torch.Tensor, *, degrees: float, shift_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each image by a random angle and shift it by a random offset (bilinear)."""
    count = images.shape[0]
    angles = _uniform(count, -degrees, degrees, generator) * (math.pi / 180)
    # affine_grid works in normalised coordinates where the image spans [-1, 1], so a
    # shift of f * side is 2f there.
    shifts = _uniform(2 * count, -2 * shift_fraction, 2 * shift_fraction, generator).view(count, 2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.stack(
        [torch.stack([cos, -sin, shifts[:, 0]], dim=1), torch.stack([sin, cos, shifts[:, 1]], dim=1)], dim=1
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_flip(images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5."""
    return _random_flip(images, generator)[0]


def _random_flip(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images), flip


def random_crop(images: torch.Tensor, *, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels and cut a random window of the original size."""
    return _random_crop(images, padding, generator)[0]


def _random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The cropped images and each one's window offsets (2, N): rows, columns, in [0, 2p]."""
    count = images.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (2, count), generator=generator)
    return crop_at(images, padding, offsets), offsets


def crop_at(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels and cut each image's window at ``offsets`` (2, N)."""
    count, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (torch.arange(height).view(1, height) + offsets[0].view(count, 1)).view(count, 1, height, 1)
    cols = (torch.arange(width).view(1, width) + offsets[1].view(count, 1)).view(count, 1, 1, width)
    batch = torch.arange(count).view(count, 1, 1, 1)
    channel = torch.arange(channels).view(1, channels, 1, 1)
    return padded[batch, channel, rows, cols]


def random_erase(
    images: torch.Tensor, *, probability: float, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Blank a random rectangle (aspect 0.3-3.3) in each image with the given probability."""
    count, _, height, width = images.shape
    area = _uniform(count, scale[0], scale[1], generator) * height * width
    log_ratio = _uniform(count, math.log(0.3), math.log(1 / 0.3), generator)
    ratio = torch.exp(log_ratio)
    erase_h = torch.sqrt(area * ratio).round().clamp(1, height)
    erase_w = torch.sqrt(area / ratio).round().clamp(1, width)
    top = (torch.rand(count, generator=generator) * (height - erase_h + 1)).floor()
    left = (torch.rand(count, generator=generator) * (width - erase_w + 1)).floor()
    apply = torch.rand(count, generator=generator) < probability
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + erase_h).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + erase_w).view(-1, 1, 1))
        & apply.view(-1, 1, 1)
    )
    return images.masked_fill(inside.unsqueeze(1), 0.0)


def augment_batch(images: torch.Tensor, config: AugmentConfig, *, generator: torch.Generator) -> torch.Tensor:
    """Apply the augmentations that ``config`` enables, in a fixed order."""
    return augment_batch_with_views(images, config, generator=generator)[0]


def alternating_flips(indices: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images (by their index in the training split) are mirrored in ``epoch``
    (0-based) under ``flip_alternate``: half of them, picked by a fixed hash of the index,
    in even epochs, and the other half in odd ones. A function of index and epoch alone,
    so a resumed run flips exactly as an uninterrupted one."""
    mixed = (indices.to(torch.int64) * 2654435761) % (1 << 32)  # Knuth's multiplicative hash
    return ((mixed >> 16) & 1).to(torch.bool) ^ bool(epoch % 2)


def augment_batch_with_views(
    images: torch.Tensor,
    config: AugmentConfig,
    *,
    generator: torch.Generator,
    indices: torch.Tensor | None = None,
    epoch: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``augment_batch``, and the view of each image (int64 (N,)): the index, in
    ``view_count(config)``'s numbering, of its discrete transform, the crop window and
    the flip (``apply_view`` makes that view of an image). Rotations, fractional shifts
    and erasing are continuous and not part of a view. Draws the same random numbers as
    ``augment_batch``, so asking for the views changes nothing else. ``indices`` (the
    images' places in the training split) and ``epoch`` decide the flips under
    ``flip_alternate``; without ``indices`` flips are random."""
    views = torch.zeros(images.shape[0], dtype=torch.int64)
    if not config.enabled:
        return images, views
    if config.rotate_degrees > 0 or config.shift_fraction > 0:
        images = random_affine(
            images, degrees=config.rotate_degrees, shift_fraction=config.shift_fraction, generator=generator
        )
    if config.crop_padding > 0:
        images, offsets = _random_crop(images, config.crop_padding, generator)
        views = offsets[0] * (2 * config.crop_padding + 1) + offsets[1]
    if config.flip:
        if config.flip_alternate and indices is not None:
            flipped = alternating_flips(indices, epoch)
            images = torch.where(flipped.view(-1, 1, 1, 1), images.flip(-1), images)
        else:
            images, flipped = _random_flip(images, generator)
        views = views + _crop_windows(config) * flipped.to(torch.int64)
    if config.erase_probability > 0:
        images = random_erase(
            images, probability=config.erase_probability, scale=config.erase_scale, generator=generator
        )
    return images, views


def _crop_windows(config: AugmentConfig) -> int:
    """How many crop windows a random crop chooses among: (2p + 1)^2, or 1 without one."""
    return (2 * config.crop_padding + 1) ** 2 if config.crop_padding > 0 else 1


def view_count(config: AugmentConfig) -> int:
    """How many discrete views (crop windows x flips) ``augment_batch_with_views`` numbers."""
    if not config.enabled:
        return 1
    return _crop_windows(config) * (2 if config.flip else 1)


def apply_view(images: torch.Tensor, config: AugmentConfig, view: int) -> torch.Tensor:
    """View number ``view`` of every image of the batch (N, 1, H, W): its crop window, then
    its flip, as ``augment_batch_with_views`` numbers them."""
    if not 0 <= view < view_count(config):
        raise ValueError(f"view {view} out of range for {view_count(config)} views")
    if not config.enabled:
        return images
    flipped, window = divmod(view, _crop_windows(config))
    if config.crop_padding > 0:
        side = 2 * config.crop_padding + 1
        offsets = torch.tensor([[window // side], [window % side]]).expand(2, images.shape[0])
        images = crop_at(images, config.crop_padding, offsets)
    return images.flip(-1) if flipped else images

"""Batched augmentation: shapes, seeding, and that each operation does what it says."""

from __future__ import annotations

import pytest
import torch

from fmnist.augment import (
    AugmentConfig,
    augment_batch,
    random_affine,
    random_crop,
    random_erase,
    random_flip,
)
from fmnist.errors import ConfigError


def _images(count: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(count, 1, 28, 28)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    config = AugmentConfig(flip=True, crop_padding=2, erase_probability=0.5)
    images = _images()
    a = augment_batch(images, config, generator=torch.Generator().manual_seed(1))
    b = augment_batch(images, config, generator=torch.Generator().manual_seed(1))
    c = augment_batch(images, config, generator=torch.Generator().manual_seed(2))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_disabled_augmentation_is_the_identity() -> None:
    images = _images()
    assert augment_batch(images, AugmentConfig(enabled=False), generator=torch.Generator()) is images


def test_zero_rotation_and_shift_leave_images_unchanged() -> None:
    images = _images()
    out = random_affine(images, degrees=0, shift_fraction=0, generator=torch.Generator())
    assert torch.allclose(out, images, atol=1e-5)


def test_rotation_keeps_a_centred_disc_and_moves_a_bar() -> None:
    images = torch.zeros(1, 1, 28, 28)
    images[0, 0, 13:15, 4:24] = 1  # a horizontal bar through the centre
    out = random_affine(images, degrees=90, shift_fraction=0, generator=torch.Generator().manual_seed(0))
    # Mass is roughly preserved; the bar is no longer the same set of pixels unless the angle was ~0.
    assert out.sum() == pytest.approx(images.sum(), rel=0.25)


def test_shift_moves_mass_by_at_most_the_fraction() -> None:
    images = torch.zeros(64, 1, 28, 28)
    images[:, 0, 12:16, 12:16] = 1
    out = random_affine(images, degrees=0, shift_fraction=0.1, generator=torch.Generator().manual_seed(0))
    rows = torch.arange(28.0).view(1, 28, 1)
    centre = (out[:, 0] * rows).sum((1, 2)) / out[:, 0].sum((1, 2))
    assert (centre - 13.5).abs().max() <= 0.1 * 28 + 0.5
    assert (centre - 13.5).abs().max() > 0.3  # something actually moved


def test_flip_mirrors_about_half_the_images() -> None:
    images = _images(200)
    out = random_flip(images, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images)])
    unchanged = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped | unchanged).all())
    assert 60 < int(flipped.sum()) < 140


def test_crop_is_an_integer_shift_with_zero_fill() -> None:
    images = _images(32)
    out = random_crop(images, padding=3, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    for o, p in zip(out, padded):
        assert any(torch.equal(o, p[:, dy : dy + 28, dx : dx + 28]) for dy in range(7) for dx in range(7))


def test_erasing_zeroes_a_rectangle_in_the_chosen_share_of_images() -> None:
    images = torch.ones(400, 1, 28, 28)
    out = random_erase(images, probability=0.5, scale=(0.05, 0.2), generator=torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).sum(1)
    share = (erased > 0).float().mean().item()
    assert 0.4 < share < 0.6
    assert erased.max() <= 0.2 * 784 * 1.3


@pytest.mark.parametrize(
    "config",
    [AugmentConfig(rotate_degrees=-1), AugmentConfig(shift_fraction=0.7), AugmentConfig(crop_padding=20), AugmentConfig(erase_probability=2)],
)
def test_invalid_strengths_are_refused(config: AugmentConfig) -> None:
    with pytest.raises(ConfigError):
        config.validate()

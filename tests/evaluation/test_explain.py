"""Saliency maps on hand-built models whose answer is known, and on a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fmnist.errors import ConfigError, DataError
from fmnist.evaluation.explain import explain, gradcam, occlusion, saliency
from fmnist.models import load_model


class BrightDark(nn.Module):
    """Class 0 scores the image's brightness, class 1 its darkness (1x1 conv, then sums)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1)
            self.conv.bias[:] = torch.tensor([0.0, 1.0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).flatten(2).sum(dim=2)  # (N, 2)


class TopLeft(nn.Module):
    """No convolution: class 0 scores the top-left quadrant only."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        corner = images[:, 0, :14, :14].mean(dim=(1, 2)) * 20
        return torch.stack([corner, torch.zeros_like(corner)], dim=1)


def random_images(count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)


def scaled(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min())


def test_gradcam_weighs_the_channel_that_drives_the_class():
    images = random_images()
    model = BrightDark().eval()
    bright = gradcam(model, images, np.array([0, 0, 0]))
    dark = gradcam(model, images, np.array([1, 1, 1]))
    pixels = images.astype(np.float64) / 255
    for index in range(len(images)):
        np.testing.assert_allclose(bright[index], scaled(pixels[index]), atol=1e-4)
        np.testing.assert_allclose(dark[index], scaled(1 - pixels[index]), atol=1e-4)


def test_occlusion_finds_the_region_the_score_depends_on():
    images = np.full((2, 28, 28), 200, dtype=np.uint8)
    maps = occlusion(TopLeft().eval(), images, np.array([0, 0]))
    assert maps.shape == (2, 28, 28)
    assert maps[:, :12, :12].min() > 0.1
    # A 6-pixel patch covering any of the quadrant reaches at most 5 pixels beyond it.
    assert maps[:, 19:, :].max() == 0 and maps[:, :, 19:].max() == 0


def test_saliency_falls_back_to_occlusion_without_convolutions():
    images = np.full((1, 28, 28), 200, dtype=np.uint8)
    maps = saliency(TopLeft().eval(), images, np.array([0]), method="gradcam")
    assert maps[0, 20:, 20:].max() == 0 and maps[0, :10, :10].min() > 0
    with pytest.raises(ConfigError, match="unknown saliency method"):
        saliency(TopLeft(), images, method="lime")
    with pytest.raises(ConfigError, match="no Conv2d"):
        gradcam(TopLeft(), images)


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_explain_a_trained_run(tiny_run: Path, method: str):
    model = load_model(tiny_run)
    images = random_images(4)
    explanation = explain(model, images, method=method)
    assert explanation.method == method
    assert explanation.maps.shape == (4, 28, 28)
    assert explanation.maps.min() >= 0 and explanation.maps.max() <= 1
    np.testing.assert_array_equal(explanation.targets, explanation.probabilities.argmax(axis=1))
    assert np.all(explain(model, images, method=method, target=3).targets == 3)


def test_explain_refusals(tiny_run: Path):
    model = load_model(tiny_run)
    with pytest.raises(DataError, match="shape"):
        explain(model, np.zeros((2, 32, 32), dtype=np.uint8))
    with pytest.raises(ConfigError, match="out of range"):
        explain(model, random_images(1), target=10)

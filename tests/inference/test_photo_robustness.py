"""The photo path end to end on real data: test images rendered as users' photos (upscaled,
dark on a grey background, off-centre, RGB JPEG) and read back through prepare_photo are
classified nearly as well as the originals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmnist.data import load
from fmnist.inference import load_predictor, prepare_photo
from fmnist.inference.photo_like import photo_robustness, render_photo_like

# Allowed accuracy drop, in points. Chosen on training images, before the test set was
# used: fast-a lost 2.7 points on 600 held-out training images (96.2% -> 93.5%);
# the margin leaves room for real_run's weaker model (3.8 points measured) and 500-image noise.
MARGIN_POINTS = 5.0


@pytest.mark.slow  # ~12 s of CPU for 500 renderings, more on a shared machine
def test_photo_like_test_images_score_close_to_the_originals(real_run: Path, real_fmnist_dir: Path):
    test = load("test", real_fmnist_dir, download=False, progress=False)
    result = photo_robustness(load_predictor(real_run), test.images[:500], test.labels[:500], seed=0)
    assert result.original_accuracy > 0.75
    assert result.drop_points <= MARGIN_POINTS, result
    # real_run (~81% here) is less sure of itself than fast-a, so more of its answers flip:
    # 89.8% agreement measured (fast-a: 96.0% on the full test set).
    assert result.agreement >= 0.85, result


def test_a_photo_like_rendering_comes_back_close_to_the_original(real_fmnist_dir: Path):
    # Independent of any model: the pipeline should undo the rendering pixel for pixel, up to
    # JPEG noise, the 5% trim tolerance and the re-sharpening of an already sharpened image.
    images = load("test", real_fmnist_dir, download=False, progress=False).images[:50]
    rng = np.random.default_rng(1)
    recovered = np.stack([prepare_photo(render_photo_like(image, rng=rng, scale=8)).image for image in images])
    difference = np.abs(recovered.astype(int) - images.astype(int))
    assert np.median(difference) <= 8 and difference.mean() < 20
    assert (recovered[:, 0, 0] == 0).mean() >= 0.9  # the grey background comes back black

"""Bounds on what one data file may hold, so hostile or mistaken files are refused early.

The official release has 60,000 training and 10,000 test images (47 MB of pixels); the
largest 28x28, ten-class dataset users are likely to bring (EMNIST digits) has 240,000.
A file claiming more than ``max_images()`` images is refused before anything of that size
is allocated or parsed: 300,000 images are 235 MB as uint8, and a Kaggle-layout CSV of that
many rows is 0.5-0.7 GB of text. $FMNIST_MAX_IMAGES raises (or lowers) the bound.
"""

from __future__ import annotations

import os

from fmnist.errors import ConfigError

DEFAULT_MAX_IMAGES = 300_000  # 5x the official training split
MAX_IMAGES_VARIABLE = "FMNIST_MAX_IMAGES"
# A Kaggle row is at most 785 cells of "255," (3,140 bytes); a line over 1 MiB is not one.
MAX_CSV_LINE_BYTES = 1 << 20
RAISE_HINT = f"set {MAX_IMAGES_VARIABLE}=N to allow more"


def max_images() -> int:
    """The most images (or labels, or CSV rows) one data file may hold."""
    text = os.environ.get(MAX_IMAGES_VARIABLE)
    if not text:
        return DEFAULT_MAX_IMAGES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"${MAX_IMAGES_VARIABLE} must be a whole number >= 1, got {text!r}",
            f"unset it to use the default of {DEFAULT_MAX_IMAGES:,}",
        )
    return value

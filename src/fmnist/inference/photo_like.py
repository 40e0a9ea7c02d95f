"""Photo-like renderings of dataset images, for checking the photo pipeline end to end.

Each 28x28 image becomes what a user might upload: upscaled (bicubic), inverted to a dark
garment on a light-grey background, padded off-centre with uneven margins, RGB,
JPEG-encoded. A model that reads these as well as the originals shows that
``prepare_photo`` undoes the rendering the way the dataset's own pipeline made the image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def render_photo_like(
    image: np.ndarray, *, rng: np.random.Generator, scale: int | None = None, quality: int = 90
) -> bytes:
    """JPEG bytes of one uint8 (28, 28) dataset image rendered as a photo.

    ``scale`` (default: random 4-8) is the upscaling factor; the background level is drawn
    from 215-255 and the margins from 0-2.5 image widths, each side on its own.
    """
    scale = scale or int(rng.integers(4, 9))
    background = int(rng.integers(215, 256))
    big = np.asarray(Image.fromarray(image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC), np.float32)
    # Inverted onto the background: the dataset's black (0) becomes the background level,
    # its white (255) becomes black.
    dark_on_light = np.rint(background * (1 - big / 255)).astype(np.uint8)
    left, top, right, bottom = (int(margin) for margin in rng.integers(0, 70 * scale, size=4))
    padded = ImageOps.expand(Image.fromarray(dark_on_light), border=(left, top, right, bottom), fill=background)
    buffer = io.BytesIO()
    padded.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

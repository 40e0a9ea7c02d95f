"""Photo-like renderings of dataset images, for checking the photo pipeline end to end.

Each 28x28 image becomes what a user might upload: upscaled (bicubic), inverted to a dark
garment on a white background, padded off-centre with uneven margins, RGB, JPEG-encoded.
A model that reads these as well as the originals shows that ``prepare_photo`` undoes
the rendering the way the dataset's own pipeline would have made the image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def render_photo_like(image: np.ndarray, *, rng: np.random.Generator, quality: int = 90) -> bytes:
    """JPEG bytes of one uint8 (28, 28) dataset image rendered as a photo."""
    scale = int(rng.integers(4, 9))  # 112-224 pixels per side
    big = Image.fromarray(image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    dark_on_white = ImageOps.invert(big).convert("RGB")
    left, top, right, bottom = (int(margin) for margin in rng.integers(0, 40 * scale // 4, size=4))
    padded = ImageOps.expand(dark_on_white, border=(left, top, right, bottom), fill=(255, 255, 255))
    buffer = io.BytesIO()
    padded.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

"""Photo-like renderings of dataset images, for checking the photo pipeline end to end.

Each 28x28 image becomes what a user might upload: upscaled (bicubic), inverted to a dark
garment on a light-grey background, padded off-centre with uneven margins, RGB,
JPEG-encoded. A model that reads these as well as the originals shows that
``prepare_photo`` undoes the rendering the way the dataset's own pipeline made the image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from fmnist.inference.photo import prepare_photo
from fmnist.inference.predictor import Predictor


def render_photo_like(
    image: np.ndarray, *, rng: np.random.Generator, scale: int | None = None, quality: int = 90
) -> bytes:
    """JPEG bytes of one uint8 (28, 28) dataset image rendered as a photo.

    ``scale`` (default: random 4-8) is the upscaling factor; the background level is drawn
    from 215-255 and the margins from 0-1 image width, each side on its own.
    """
    scale = scale or int(rng.integers(4, 9))
    background = int(rng.integers(215, 256))
    height, width = image.shape
    big = np.asarray(Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.BICUBIC), np.float32)
    # Inverted onto the background: the dataset's black (0) becomes the background level,
    # its white (255) becomes black.
    dark_on_light = np.rint(background * (1 - big / 255)).astype(np.uint8)
    left, top, right, bottom = (int(margin) for margin in rng.integers(0, width * scale, size=4))
    padded = ImageOps.expand(Image.fromarray(dark_on_light), border=(left, top, right, bottom), fill=background)
    buffer = io.BytesIO()
    padded.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class PhotoRobustness:
    images: int
    original_accuracy: float  # on the 28x28 images as stored
    photo_accuracy: float  # on their photo-like renderings, after prepare_photo
    agreement: float  # share of images whose predicted class is the same both ways
    warned: int  # renderings that prepare_photo warned about

    @property
    def drop_points(self) -> float:
        return round(100 * (self.original_accuracy - self.photo_accuracy), 2)


def photo_robustness(
    predictor: Predictor, images: np.ndarray, labels: np.ndarray, *, seed: int = 0, scale: int | None = None
) -> PhotoRobustness:
    """Accuracy of ``predictor`` on ``images`` (uint8 (N, 28, 28)) and on their photo-like
    renderings read back through ``prepare_photo`` (the whole path a user's photo takes)."""
    rng = np.random.default_rng(seed)
    prepared = [prepare_photo(render_photo_like(image, rng=rng, scale=scale)) for image in images]
    original = predictor.probabilities(images).argmax(1)
    photo = predictor.probabilities(np.stack([item.image for item in prepared])).argmax(1)
    return PhotoRobustness(
        images=len(images),
        original_accuracy=float((original == labels).mean()),
        photo_accuracy=float((photo == labels).mean()),
        agreement=float((original == photo).mean()),
        warned=sum(bool(item.warnings) for item in prepared),
    )

# fmnist photo preparation reference: numpy and Pillow only (`fmnist export` writes this file)
"""A photo -> the 28x28 uint8 image an fmnist model takes, the way Fashion-MNIST was made.

    from prepare_photo import prepare_photo
    image = prepare_photo("boot.jpg")     # uint8 (28, 28): light garment on black
    probabilities, logits = session.run(None, {"images": image[None]})  # an fmnist ONNX export

    python prepare_photo.py boot.jpg boot-28.png   # the same from the command line

These are the very functions `fmnist predict` and `fmnist serve` use (fmnist.inference.photo
imports them from this file), so the result is identical. The steps (Xiao et al. 2017,
arXiv:1708.07747, section 2, plus one step beyond): trim the edges close to the corner
colour (within 5% of full intensity), resize the longest edge to 28 by subsampling, sharpen
(unsharp mask, sigma 1), centre on a 28x28 canvas of the background colour, negate (a light
background), convert to 8-bit grey, level the background to black. A 28x28 image that is
already dataset-style (light garment on dark corners) passes through unchanged.

Not here: fmnist's guards for untrusted files (an allow-list of formats, a pixel limit read
from the header before decoding) and its warnings about photos unlike the data.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageFilter, ImageOps

IMAGE_SIZE = 28  # pixels per side of the model's input
TRIM_TOLERANCE = 0.05  # of full intensity (255): the paper's "within 5%"
# Longest edge of the working image: larger photos are reduced while or right after decoding.
WORKING_EDGE = 1024
DARK_CORNERS = 40  # mean corner level (0-255) below which a 28x28 grey image is dataset-style
CORNERS = ([0, 0, -1, -1], [0, -1, 0, -1])  # (rows, columns) of the four corner pixels


def decode(image: Image.Image, *, max_edge: int | None = WORKING_EDGE) -> Image.Image:
    """Decode an opened image: its first frame, EXIF orientation applied, reduced by a whole
    factor (a JPEG while it is decoded) until its longest edge is at most ``max_edge``."""
    image.seek(0)
    if max_edge is not None and image.format in ("JPEG", "MPO") and max(image.size) > max_edge:
        factor = reduction(image.size, max_edge)
        image.draft(None, (image.size[0] // factor, image.size[1] // factor))  # at least that size
    image.load()
    if max_edge is not None and max(image.size) > max_edge:
        image = reducible(image).reduce(reduction(image.size, max_edge))
    return ImageOps.exif_transpose(image)


def reduction(size: tuple[int, int], max_edge: int) -> int:
    return -(-max(size) // max_edge)  # ceil: the reduced longest edge is at most max_edge


def reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode whose pixel values may be averaged (palette indices may not;
    Image.reduce refuses 1-bit and 16-bit modes; 16-bit grey becomes 32-bit "I")."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGBA" if image.mode == "PA" else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def rgba(image: Image.Image) -> np.ndarray:
    """uint8 (H, W, 4) of any image mode; 16- and 32-bit greys are scaled, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        levels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(levels / 257), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        levels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # NaN: black
        top = 1.0 if levels.max(initial=0) <= 1.0 else 255.0  # float images come as [0, 1] or [0, 255]
        image = Image.fromarray(np.clip(np.rint(levels * 255 / top), 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGBA"))


def dark_corners(grey: np.ndarray) -> bool:
    return grey[CORNERS].mean() < DARK_CORNERS


def is_dataset_style(image: Image.Image) -> bool:
    """A 28x28 grey image with dark corners: already what the model takes."""
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        return False
    if image.mode == "L":
        return dark_corners(np.asarray(image))
    pixels = rgba(image)
    if (pixels[..., 3] < 255).any():  # transparency: a cut-out, not a dataset image
        return False
    rgb = pixels[..., :3].astype(np.int16)
    if np.abs(rgb - rgb[..., :1]).max() > 8:  # coloured: a photo
        return False
    return dark_corners(rgb[..., 0])


def grey_of(image: Image.Image) -> np.ndarray:
    """uint8 (H, W): the image as 8-bit grey."""
    grey = image if image.mode == "L" else Image.fromarray(rgba(image)).convert("L")
    return np.asarray(grey, dtype=np.uint8).copy()


def background_colour(pixels: np.ndarray) -> np.ndarray:
    """RGB float (3,): the median of the opaque corner pixels of ``pixels`` (H, W, 4);
    white when every corner is transparent (like the light studio background)."""
    opaque = pixels[CORNERS[0], CORNERS[1], 3] > 0
    if opaque.any():
        return np.median(pixels[CORNERS[0], CORNERS[1], :3][opaque], axis=0)
    return np.array([255.0, 255.0, 255.0])


def flattened(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3): transparent pixels become background, half-transparent ones
    are blended over it, as a viewer shows them."""
    if (pixels[..., 3] < 255).any():
        alpha = pixels[..., 3:].astype(np.float32) / 255  # (H, W, 1); 0 = transparent
        return np.rint(pixels[..., :3] * alpha + background * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3])


def foreground_mask(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels further than TRIM_TOLERANCE from the background in some channel."""
    difference = np.abs(rgb.astype(np.int16) - np.rint(background).astype(np.int16))
    distance = np.maximum(np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2])
    return distance > TRIM_TOLERANCE * 255


def trim_box(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) holding foreground; the whole image when there is none."""
    if not foreground.any():
        return np.array([0, foreground.shape[0] - 1]), np.array([0, foreground.shape[1] - 1])
    return np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))


def framed(rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray, background: np.ndarray) -> Image.Image:
    """The trimmed object, its longest edge subsampled to 28, sharpened, centred on a
    28x28 RGB canvas of the background colour."""
    cropped = Image.fromarray(rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    width, height = cropped.size
    scale = IMAGE_SIZE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cropped.resize(size, Image.Resampling.NEAREST)  # subsampling, as the paper
    # The paper's "Gaussian operator of radius and sigma 1.0", read as an unsharp mask whose
    # Gaussian has sigma 1 (Pillow's UnsharpMask radius is that sigma).
    sharpened = resized.filter(ImageFilter.UnsharpMask(radius=1.0, percent=100, threshold=0))
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), fill_of(background))
    canvas.paste(sharpened, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    return canvas


def fill_of(background: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.rint(background))


def background_level(background: np.ndarray) -> float:
    """The background's luma (ITU-R 601), 0-255: 128 or more is a light background."""
    return float(np.dot(background, [0.299, 0.587, 0.114]))


def grey_levels(canvas: Image.Image, background: np.ndarray) -> tuple[np.ndarray, float]:
    """(float64 grey (28, 28), the background's grey level) of the canvas, negated when the
    background is light (the dataset has light garments on black)."""
    negate = background_level(background) >= 128

    def convert(image: Image.Image) -> Image.Image:
        return ImageOps.invert(image).convert("L") if negate else image.convert("L")

    floor = float(np.asarray(convert(Image.new("RGB", (1, 1), fill_of(background))))[0, 0])
    return np.asarray(convert(canvas), dtype=np.float64), floor


def level_to_black(pixels: np.ndarray, floor: float) -> np.ndarray:
    """uint8: [floor, 255] stretched to [0, 255], so the background becomes exactly 0 as in
    the dataset (a light-grey wall would otherwise be a grey frame the model never saw)."""
    if 0 < floor < 255:
        pixels = (pixels - floor) * 255 / (255 - floor)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def prepare_image(image: Image.Image) -> np.ndarray:
    """uint8 (28, 28) for a decoded Pillow image."""
    if is_dataset_style(image):
        return grey_of(image)
    pixels = rgba(image)
    background = background_colour(pixels)
    rgb = flattened(pixels, background)
    rows, cols = trim_box(foreground_mask(rgb, background))
    return level_to_black(*grey_levels(framed(rgb, rows, cols, background), background))


def prepare_photo(path: str) -> np.ndarray:
    """uint8 (28, 28) for a photo file (PNG, JPEG, WebP, GIF, BMP, TIFF)."""
    with Image.open(path) as image:
        return prepare_image(decode(image))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python prepare_photo.py PHOTO OUT.png")
    Image.fromarray(prepare_photo(sys.argv[1])).save(sys.argv[2])

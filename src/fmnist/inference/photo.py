"""Any photo -> a 28x28 Fashion-MNIST image, made the way the dataset was made.

Fashion-MNIST was built from Zalando product photos on a light-grey background
(Xiao et al. 2017, arXiv:1708.07747, section 2). Its pipeline, which this follows:
1. trim the edges whose colour is close to the corner pixels' colour (within 5% of the
   maximum possible intensity, RGB space);
2. resize the longest edge to 28 by subsampling (skipping rows and columns);
3. sharpen with a Gaussian operator of radius and sigma 1.0;
4. extend the shorter edge to 28 with the object centred;
5. negate the intensities;
6. convert to 8-bit greyscale.
So the garment fills the frame along its longest edge (there is no MNIST-style 20x20 box
or centring by mass). An image that is already dataset-style (28x28, light garment on
black) passes through unchanged.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from fmnist.data.classes import IMAGE_SIZE
from fmnist.data.input_files import refuse_special_file
from fmnist.errors import DataError

TRIM_TOLERANCE = 0.05  # of full intensity (255): the paper's "within 5%"
DEFAULT_MAX_PIXELS = 40_000_000  # decompression-bomb guard: ~40 megapixels
# The formats `fmnist predict` documents; Image.open tries no other plugin (Pillow knows ~40,
# each a parser of untrusted bytes). "JPEG" also opens the MPO files many phones save.
PHOTO_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# Longest edge of the working image (pixels): larger photos are reduced while or right after
# decoding, before any per-pixel step, so the preparation of a 24-megapixel photo costs what
# a 1-megapixel one does. 28 output pixels per edge stay at least 18 working pixels apart.
WORKING_EDGE = 1024
# What Pillow raises from hostile or damaged files, besides its own UnidentifiedImageError:
# each plugin parses with struct, slicing and arithmetic on values read from the file.
DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError, TypeError,
    ZeroDivisionError, OverflowError, AttributeError, RecursionError,
)  # fmt: skip


class UnsupportedImageError(DataError):
    """Not an image, or in a format that is not read."""


class ImageTooLargeError(DataError):
    """More pixels than the limit (read from the header, or Pillow's own bomb guard)."""


class CorruptImageError(DataError):
    """An image file whose header was read but whose data is damaged or truncated."""
DARK_CORNERS = 40  # mean corner level (0-255) below which a 28x28 grey image is dataset-style
LOW_CONTRAST = 40  # grey levels between the 2nd and 98th percentile of the result


@dataclass
class PreparedImage:
    image: np.ndarray  # uint8 (28, 28): what the model sees
    warnings: list[str] = field(default_factory=list)
    passthrough: bool = False  # True when the input was already dataset-style


def open_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_edge: int | None = None,
    formats: Sequence[str] = PHOTO_FORMATS,
) -> Image.Image:
    """Open a PNG/JPEG/WebP/GIF (first frame)/BMP/TIFF from a path or bytes, EXIF orientation applied.

    Raises DataError (UnsupportedImageError, ImageTooLargeError, CorruptImageError) for
    anything that is not a readable image in ``formats`` or has more than ``max_pixels``
    pixels (checked from the header, before decoding). With ``max_edge`` the image is
    reduced at decode until its longest edge is at most that (see ``decode_opened``).
    """
    if isinstance(source, bytes):
        if not source:
            raise DataError("upload: empty file", "send an image file")
        return _decode(io.BytesIO(source), "upload", max_pixels, max_edge, formats)
    refuse_special_file(source)  # a FIFO would block open() below, a device never end
    try:
        with open(source, "rb") as handle:
            return _decode(handle, str(source), max_pixels, max_edge, formats)
    except OSError as error:  # only open() gets here: _decode turns its own errors into DataError
        raise DataError(f"{source}: cannot read ({error.strerror})", "check the path") from None


def _decode(handle: BinaryIO, name: str, max_pixels: int, max_edge: int | None, formats: Sequence[str]) -> Image.Image:
    with open_header(handle, name, max_pixels=max_pixels, formats=formats) as image:
        return decode_opened(image, name, max_edge=max_edge)


def open_header(handle: BinaryIO, name: str, *, max_pixels: int, formats: Sequence[str] = PHOTO_FORMATS) -> Image.Image:
    """``Image.open`` of one of ``formats``, only the header read, refused when it has more
    than ``max_pixels`` pixels. Pillow's own bomb guard (a warning, or an error at twice its
    limit) is refused as too large too: the caller turns the warning into an error."""
    try:
        image = Image.open(handle, formats=list(formats))
        width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{name}: image is far over the limit of {max_pixels:,} pixels", "send a smaller image") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(f"{name}: not a supported image", f"send a {_format_list(formats)} file") from None
    except DECODE_ERRORS as error:
        raise CorruptImageError(f"{name}: corrupt or truncated image ({_reason(error)})", "send a complete image file") from None
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
            "send a smaller image",
        )
    return image


def decode_opened(image: Image.Image, name: str, *, max_edge: int | None = None) -> Image.Image:
    """Decode an image that ``Image.open`` has only read the header of (the caller checked
    its size): the first frame of an animation, EXIF orientation applied.

    With ``max_edge``, an image whose longest edge is longer is reduced by a whole factor
    (box average) until it is at most ``max_edge``: a JPEG while it is decoded (its DCT
    scaling, ``Image.draft``: 1/2, 1/4 or 1/8 of the pixels are ever made), anything else
    right after, so no later step touches the full-size pixels."""
    try:
        image.seek(0)
        if max_edge is not None and image.format in ("JPEG", "MPO") and max(image.size) > max_edge:
            factor = _reduction(image.size, max_edge)
            image.draft(None, (image.size[0] // factor, image.size[1] // factor))  # at least that size
        image.load()
        if max_edge is not None and max(image.size) > max_edge:
            image = _reducible(image).reduce(_reduction(image.size, max_edge))
        return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # A container whose inner image is larger than its header said (an ICNS's PNG, say).
        raise ImageTooLargeError(f"{name}: image is far over its declared size", "send a smaller image") from None
    except DECODE_ERRORS as error:
        raise CorruptImageError(f"{name}: corrupt or truncated image ({_reason(error)})", "send a complete image file") from None


def _reduction(size: tuple[int, int], max_edge: int) -> int:
    return -(-max(size) // max_edge)  # ceil: the reduced longest edge is at most max_edge


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode whose pixel values may be averaged: palette indices may not, and
    Image.reduce refuses 1-bit and 16-bit modes. 16-bit grey becomes 32-bit ("I"), which
    ``_rgba`` scales like 16-bit."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGBA" if image.mode == "PA" else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def _reason(error: BaseException) -> str:
    """One short line: some of Pillow's messages span lines or quote the file's bytes."""
    return str(error).splitlines()[0][:200] if str(error).strip() else type(error).__name__


def _format_list(formats: Sequence[str]) -> str:
    names = [{"WEBP": "WebP"}.get(fmt, fmt) for fmt in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _is_dataset_style(image: Image.Image) -> bool:
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        return False
    if image.mode == "L":  # the common case (dataset images saved as PNG): no conversion
        return _dark_corners(np.asarray(image))
    rgba = _rgba(image)
    if (rgba[..., 3] < 255).any():  # transparency: a cut-out, not a dataset image
        return False
    rgb = rgba[..., :3].astype(np.int16)
    if np.abs(rgb - rgb[..., :1]).max() > 8:  # coloured: a photo, not a dataset image
        return False
    return _dark_corners(rgb[..., 0])


def _dark_corners(grey: np.ndarray) -> bool:
    return grey[[0, 0, -1, -1], [0, -1, 0, -1]].mean() < DARK_CORNERS


def _rgba(image: Image.Image) -> np.ndarray:
    """uint8 (H, W, 4) of any image mode. 16- and 32-bit greys are scaled, not clipped
    (Pillow's convert would turn every level above 255 into white)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        levels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(levels / 257), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        levels = np.asarray(image, dtype=np.float64)
        top = 1.0 if levels.max(initial=0) <= 1.0 else 255.0  # float images come as [0, 1] or [0, 255]
        image = Image.fromarray(np.clip(np.rint(levels * 255 / top), 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGBA"))


def prepare_image(image: Image.Image, *, raw: bool = False) -> PreparedImage:
    """The 28x28 uint8 image the model sees, and warnings about inputs unlike the data."""
    if raw or _is_dataset_style(image):
        grey = image if image.mode == "L" else Image.fromarray(_rgba(image)).convert("L")
        if grey.size != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"--raw needs a {IMAGE_SIZE}x{IMAGE_SIZE} image, got {grey.size[0]}x{grey.size[1]}",
                "drop --raw to convert a photo",
            )
        return PreparedImage(np.asarray(grey, dtype=np.uint8).copy(), passthrough=True)

    warnings: list[str] = []
    rgba = _rgba(image)
    corner_rows, corner_cols = [0, 0, -1, -1], [0, -1, 0, -1]
    opaque_corners = rgba[corner_rows, corner_cols, 3] > 0
    if opaque_corners.any():
        background = np.median(rgba[corner_rows, corner_cols, :3][opaque_corners], axis=0)
    else:
        background = np.array([255.0, 255.0, 255.0])  # transparent: like the light studio background
    # Transparent pixels are background; half-transparent edges (anti-aliased cut-outs)
    # are blended over it, as a viewer would show them.
    # (Skipped for opaque images, the common case: it is most of the time on large photos.)
    if (rgba[..., 3] < 255).any():
        alpha = rgba[..., 3:].astype(np.float32) / 255  # (H, W, 1); 0 = transparent
        rgb = np.rint(rgba[..., :3] * alpha + background * (1 - alpha)).astype(np.uint8)
    else:
        rgb = np.ascontiguousarray(rgba[..., :3])

    # Per channel, in int16 (a float64 copy of a large photo costs more than the rest).
    difference = np.abs(rgb.astype(np.int16) - np.rint(background).astype(np.int16))
    distance = np.maximum(np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2])  # max(axis=2), 3x faster
    foreground = distance > TRIM_TOLERANCE * 255
    if not foreground.any():
        warnings.append("no object found: the image is a single colour")
        rows, cols = np.array([0, rgb.shape[0] - 1]), np.array([0, rgb.shape[1] - 1])
    else:
        rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
        if rows[0] == 0 and cols[0] == 0 and rows[-1] == rgb.shape[0] - 1 and cols[-1] == rgb.shape[1] - 1:
            warnings.append("nothing to trim: the object touches every edge or the background is not plain")
    cropped = Image.fromarray(rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])

    width, height = cropped.size
    scale = IMAGE_SIZE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cropped.resize(size, Image.Resampling.NEAREST)  # subsampling, as the paper
    # The paper's "Gaussian operator of radius and sigma 1.0", read as an unsharp mask whose
    # Gaussian has sigma 1 (Pillow's UnsharpMask radius is that sigma); percent=100 adds the
    # full difference from the blurred copy back, threshold=0 sharpens every pixel.
    sharpened = resized.filter(ImageFilter.UnsharpMask(radius=1.0, percent=100, threshold=0))
    fill = tuple(int(v) for v in np.rint(background))
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), fill)
    canvas.paste(sharpened, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))

    background_level = float(np.dot(background, [0.299, 0.587, 0.114]))
    negate = background_level >= 128
    if not negate:
        # A dark background: the garment is already light on dark, like the dataset.
        warnings.append("dark background: the image was not negated (the dataset has light garments on black)")
    convert = (lambda image: ImageOps.invert(image).convert("L")) if negate else (lambda image: image.convert("L"))
    pixels = np.asarray(convert(canvas), dtype=np.float64)
    floor = float(np.asarray(convert(Image.new("RGB", (1, 1), fill)))[0, 0])  # the background, converted

    low, high = np.percentile(pixels, [2, 98])
    if high - low < LOW_CONTRAST:
        warnings.append(f"low contrast: grey levels span only {high - low:.0f} of 255")
    # Level the background to black, a step beyond the paper: the dataset's backgrounds are
    # exactly 0 (99.8% of the training images' corner pixels), so its photos were negated
    # from pure white, and a light-grey wall would otherwise become a grey frame the model
    # never saw (600 held-out training images rendered on 215-255 grey backgrounds: fast-a
    # scored 87.2% without this step, against 96.2% on the originals). Stretch
    # [background, 255] to [0, 255]; a pure white background (0 once negated) changes nothing.
    if 0 < floor < 255:
        pixels = (pixels - floor) * 255 / (255 - floor)
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    if foreground.any() and background_level >= 200:
        object_level = float(np.dot(rgb[foreground].mean(axis=0), [0.299, 0.587, 0.114]))
        if object_level >= 200:
            warnings.append("light object on a light background: the model will see a faint shape")
    return PreparedImage(pixels, warnings)


def prepare_photo(
    source: str | Path | bytes, *, raw: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> PreparedImage:
    """Open a photo (path or bytes) and turn it into the 28x28 image the model sees (the
    photo reduced at decode to at most WORKING_EDGE pixels along its longest edge)."""
    return prepare_image(open_image(source, max_pixels=max_pixels, max_edge=WORKING_EDGE), raw=raw)

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
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from fmnist.data.input_files import permission_error, refuse_special_file
from fmnist.errors import DataError

# The pixel steps live in standalone_photo.py (numpy + Pillow only), which `fmnist export`
# writes next to an exported model, so a plain runtime prepares photos exactly like this.
from fmnist.inference.standalone_photo import (
    IMAGE_SIZE,  # the contract's image size (tested)
    TRIM_TOLERANCE,  # noqa: F401 (part of this module's documented constants)
    WORKING_EDGE,
    background_colour,
    background_level,
    decode,
    flattened,
    foreground_mask,
    framed,
    grey_levels,
    grey_of,
    is_dataset_style,
    level_to_black,
    rgba,
    trim_box,
)

DEFAULT_MAX_PIXELS = 40_000_000  # decompression-bomb guard: ~40 megapixels
# The formats `fmnist predict` documents; Image.open tries no other plugin (Pillow knows ~40,
# each a parser of untrusted bytes). "JPEG" also opens the MPO files many phones save.
PHOTO_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# WORKING_EDGE (standalone_photo.py): larger photos are reduced while or right after decoding,
# before any per-pixel step, so the preparation of a 24-megapixel photo costs what a
# 1-megapixel one does. 28 output pixels per edge stay at least 18 working pixels apart.
# What Pillow raises from hostile or damaged files, besides its own UnidentifiedImageError:
# each plugin parses with struct, slicing and arithmetic on values read from the file.
DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError, TypeError,
    ZeroDivisionError, OverflowError, AttributeError, RecursionError,
)  # fmt: skip

# Small files that cost far more than their pixels to read, each bounded here:
# - PNG text chunks are inflated and kept while the header is read: Pillow allows 64 MB of
#   text per image, so 64 uploads of 60 KB held 4 GB. 1 MB is far above a photo's XMP.
MAX_TEXT_BYTES = 1 << 20
PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, MAX_TEXT_BYTES)
# - every scan of a progressive JPEG is decoded over the whole image (2.8 ms a scan at 24
#   megapixels, and a repeated 42-byte scan is valid): real files have at most ~12, plus
#   those of an embedded thumbnail or an MPO's second picture.
MAX_JPEG_SCANS = 100
# - Pillow decodes RLE-compressed BMPs in Python, ~15x slower a pixel than the C decoders
#   (a 1-megapixel RLE8 BMP of 5 KB: 0.3 s), so each of their pixels counts this many times.
RLE_BMP_COST = 16
BMP_RLE_COMPRESSIONS = (1, 2)  # BI_RLE8, BI_RLE4


class UnsupportedImageError(DataError):
    """Not an image, or in a format that is not read."""


class ImageTooLargeError(DataError):
    """More pixels than the limit (read from the header, or Pillow's own bomb guard)."""


class CorruptImageError(DataError):
    """An image file whose header was read but whose data is damaged or truncated."""


class ImageTooCostlyError(ImageTooLargeError):
    """Within the pixel limit, but far costlier to read than its pixels (text metadata, scans)."""


def decode_cost(image: Image.Image) -> int:
    """The pixels an opened image counts for against a pixel limit: its own, times
    RLE_BMP_COST for a BMP that Pillow decodes in Python."""
    pixels = image.size[0] * image.size[1]
    if image.format == "BMP" and image.info.get("compression") in BMP_RLE_COMPRESSIONS:
        return pixels * RLE_BMP_COST
    return pixels
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
    except PermissionError:  # as an unreadable folder is reported
        raise permission_error(source) from None
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
        if "MAX_TEXT" in str(error):  # Pillow's text-chunk limits (MAX_TEXT_BYTES above)
            raise ImageTooCostlyError(
                f"{name}: its text metadata is over the limit of {MAX_TEXT_BYTES // (1 << 20)} MB",
                "save the image again without its metadata",
            ) from None
        raise CorruptImageError(f"{name}: corrupt or truncated image ({_reason(error)})", "send a complete image file") from None
    if width <= 0 or height <= 0:  # a BMP may claim a negative width
        image.close()
        raise CorruptImageError(f"{name}: corrupt image header (size {width}x{height})", "send a complete image file")
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
            "send a smaller image",
        )
    try:
        _refuse_costly(image, handle, name, max_pixels)
    except DataError:
        image.close()
        raise
    return image


def _refuse_costly(image: Image.Image, handle: BinaryIO, name: str, max_pixels: int) -> None:
    if decode_cost(image) > max_pixels:
        limit = max_pixels // RLE_BMP_COST
        raise ImageTooCostlyError(
            f"{name}: an RLE-compressed BMP of {image.size[0] * image.size[1]:,} pixels, over the limit of {limit:,} "
            "for this slow-to-decode format",
            "send it as PNG, or as a smaller or uncompressed BMP",
        )
    if image.format in ("JPEG", "MPO"):
        scans = count_jpeg_scans(handle, stop_after=MAX_JPEG_SCANS)
        if scans > MAX_JPEG_SCANS:
            raise ImageTooCostlyError(
                f"{name}: a JPEG with over {MAX_JPEG_SCANS} scans (each is decoded over the whole image)",
                "save it again as a baseline JPEG or a PNG",
            )


def count_jpeg_scans(handle: BinaryIO, *, stop_after: int) -> int:
    """Start-of-scan markers (FF DA) in a JPEG file; reading stops (1 MB at a time) once
    the count is over ``stop_after``. The handle's position is kept. Entropy-coded data never holds FF DA (an FF in it is followed
    by 00 or a restart marker), so only metadata bytes can add to the count, never hide a scan."""
    position = handle.tell()
    try:
        handle.seek(0)
        count, tail = 0, b""
        while count <= stop_after and (chunk := handle.read(1 << 20)):
            data = tail + chunk
            count += data.count(b"\xff\xda")
            tail = data[-1:]  # a marker split between two reads is counted with the next
        return count
    finally:
        handle.seek(position)


def decode_opened(image: Image.Image, name: str, *, max_edge: int | None = None) -> Image.Image:
    """Decode an image that ``Image.open`` has only read the header of (the caller checked
    its size): the first frame of an animation, EXIF orientation applied.

    With ``max_edge``, an image whose longest edge is longer is reduced by a whole factor
    (box average) until it is at most ``max_edge``: a JPEG while it is decoded (its DCT
    scaling, ``Image.draft``: 1/2, 1/4 or 1/8 of the pixels are ever made), anything else
    right after, so no later step touches the full-size pixels."""
    try:
        return decode(image, max_edge=max_edge)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # A container whose inner image is larger than its header said (an ICNS's PNG, say).
        raise ImageTooLargeError(f"{name}: image is far over its declared size", "send a smaller image") from None
    except DECODE_ERRORS as error:
        raise CorruptImageError(f"{name}: corrupt or truncated image ({_reason(error)})", "send a complete image file") from None


def _reason(error: BaseException) -> str:
    """One short line: some of Pillow's messages span lines or quote the file's bytes."""
    return str(error).splitlines()[0][:200] if str(error).strip() else type(error).__name__


def _format_list(formats: Sequence[str]) -> str:
    names = [{"WEBP": "WebP"}.get(fmt, fmt) for fmt in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def prepare_image(image: Image.Image, *, raw: bool = False) -> PreparedImage:
    """The 28x28 uint8 image the model sees, and warnings about inputs unlike the data."""
    if raw or is_dataset_style(image):
        grey = grey_of(image)
        if grey.shape != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"--raw needs a {IMAGE_SIZE}x{IMAGE_SIZE} image, got {grey.shape[1]}x{grey.shape[0]}",
                "drop --raw to convert a photo",
            )
        return PreparedImage(grey, passthrough=True)

    warnings: list[str] = []
    pixels = rgba(image)
    background = background_colour(pixels)
    rgb = flattened(pixels, background)
    foreground = foreground_mask(rgb, background)
    rows, cols = trim_box(foreground)
    if not foreground.any():
        warnings.append("no object found: the image is a single colour")
    elif rows[0] == 0 and cols[0] == 0 and rows[-1] == rgb.shape[0] - 1 and cols[-1] == rgb.shape[1] - 1:
        warnings.append("nothing to trim: the object touches every edge or the background is not plain")
    level = background_level(background)
    if level < 128:
        # A dark background: the garment is already light on dark, like the dataset.
        warnings.append("dark background: the image was not negated (the dataset has light garments on black)")
    grey, floor = grey_levels(framed(rgb, rows, cols, background), background)
    low, high = np.percentile(grey, [2, 98])
    if high - low < LOW_CONTRAST:
        warnings.append(f"low contrast: grey levels span only {high - low:.0f} of 255")
    # Levelling the background to black is a step beyond the paper: the dataset's backgrounds
    # are exactly 0 (99.8% of the training images' corner pixels), so its photos were negated
    # from pure white, and a light-grey wall would otherwise become a grey frame the model
    # never saw (600 held-out training images rendered on 215-255 grey backgrounds: fast-a
    # scored 87.2% without this step, against 96.2% on the originals).
    prepared = level_to_black(grey, floor)
    if foreground.any() and level >= 200:
        object_level = float(np.dot(rgb[foreground].mean(axis=0), [0.299, 0.587, 0.114]))
        if object_level >= 200:
            warnings.append("light object on a light background: the model will see a faint shape")
    return PreparedImage(prepared, warnings)


def prepare_photo(
    source: str | Path | bytes, *, raw: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> PreparedImage:
    """Open a photo (path or bytes) and turn it into the 28x28 image the model sees (the
    photo reduced at decode to at most WORKING_EDGE pixels along its longest edge)."""
    return prepare_image(open_image(source, max_pixels=max_pixels, max_edge=WORKING_EDGE), raw=raw)

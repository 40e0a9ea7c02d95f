"""Small image files that cost far more to read than their pixels: the builders shared by
the photo, predict and server tests (a module of its own, like cli_result)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_text(megabytes: int) -> bytes:
    """A 1x1 PNG with ``megabytes`` zTXt chunks of 1 MB of text each (~1 KB compressed each)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buffer, format="PNG")
    raw = buffer.getvalue()
    ihdr_end = 8 + 25  # the signature, then the 25-byte IHDR chunk
    text = zlib.compress(b"A" * ((1 << 20) - 16), 9)
    chunks = b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + text) for i in range(megabytes))
    return raw[:ihdr_end] + chunks + raw[ihdr_end:]


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each JPEG segment; a scan runs to the next real marker."""
    position, found = 2, []
    while position < len(data):
        marker = data[position + 1]
        if marker == 0xD9:  # end of image
            found.append((marker, position, position + 2))
            break
        end = position + 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:  # stuffed byte, restart marker
                    end += 2
                    continue
                break
        found.append((marker, position, end))
        position = end
    return found


def jpeg_with_scans(extra_scans: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A valid progressive JPEG whose last scan is repeated ``extra_scans`` more times:
    every scan is decoded over the whole image, so a few bytes each buy a full pass."""
    buffer = io.BytesIO()
    Image.new("L", size, 200).save(buffer, format="JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    scans = [(start, end) for marker, start, end in _segments(data) if marker == 0xDA]
    start, end = scans[-1]
    return data[:end] + data[start:end] * extra_scans + data[end:]


def rle_bmp(width: int, height: int) -> bytes:
    """An 8-bit RLE-compressed BMP (BI_RLE8) whose rows each end after one pixel: Pillow
    pads the rest of every row in Python, one pixel at a time."""
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    pixels = b"\x01\xff\x00\x00" * height + b"\x00\x01"  # a run of one pixel, end of line; end of bitmap
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def bmp_with_width(width: int, height: int = 4) -> bytes:
    """An uncompressed 24-bit BMP header claiming ``width`` (negative: a corrupt header)."""
    row = (abs(width) * 3 + 3) // 4 * 4
    pixels = b"\0" * (row * height)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) + info + pixels

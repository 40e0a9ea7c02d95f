"""Read the original IDX files (gzipped or not) into uint8 arrays, refusing bad ones.

Format (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, one 4-byte size per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.data.classes import IMAGE_SIZE, NUM_CLASSES
from fmnist.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08


@dataclass(frozen=True)
class IdxContent:
    array: np.ndarray  # uint8, (N, 28, 28) for images, (N,) for labels
    sha256: str  # of the decompressed file content


def read_content(path: Path) -> bytes:
    """The file's bytes, decompressed when they are gzip data."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})", "check the path and permissions") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise DataError(
                f"{path}: the gzip stream is truncated (the file was cut short)",
                "download it again",
            ) from None
        except (gzip.BadGzipFile, zlib.error) as error:
            raise DataError(f"{path}: corrupt gzip data ({error})", "download it again") from None
    if path.suffix == ".gz":
        raise DataError(
            f"{path}: the name ends in .gz but the content is not gzip data",
            "download it again, or remove the .gz suffix if it is an uncompressed IDX file",
        )
    return raw


def parse_idx(content: bytes, path: Path, *, expected_dims: int) -> np.ndarray:
    """Parse IDX bytes into an array, checking magic number, dimensions and length."""
    if len(content) < 4:
        raise DataError(f"{path}: only {len(content)} bytes, too short to be an IDX file", "download it again")
    zero1, zero2, type_code, ndim = content[:4]
    if zero1 != 0 or zero2 != 0 or type_code != UBYTE or ndim != expected_dims:
        found = content[:4].hex()
        expected = f"0000{UBYTE:02x}{expected_dims:02x}"
        raise DataError(
            f"{path}: wrong IDX magic number 0x{found} (expected 0x{expected}: unsigned bytes, "
            f"{expected_dims} dimension{'s' if expected_dims > 1 else ''})",
            "is this the right file? Fashion-MNIST images are idx3-ubyte, labels idx1-ubyte",
        )
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(f"{path}: the IDX header is truncated", "download it again")
    dims = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{path}: images are {dims[1]}x{dims[2]} pixels, expected {IMAGE_SIZE}x{IMAGE_SIZE}",
            "fmnist works on 28x28 greyscale images; resize your data first",
        )
    expected_bytes = int(np.prod(dims, dtype=np.int64))
    data_bytes = len(content) - header_size
    if data_bytes < expected_bytes:
        raise DataError(
            f"{path}: truncated: the header promises {expected_bytes:,} bytes of data for shape "
            f"{dims}, the file holds {data_bytes:,}",
            "download it again",
        )
    if data_bytes > expected_bytes:
        raise DataError(
            f"{path}: {data_bytes - expected_bytes:,} unexpected bytes after the data for shape {dims}",
            "the file is corrupt or not an IDX file; download it again",
        )
    # A bytearray copy makes the array writable (np.frombuffer over bytes is read-only,
    # which torch warns about when the array becomes a tensor).
    return np.frombuffer(bytearray(content[header_size:]), dtype=np.uint8).reshape(dims)


def read_idx(path: Path, *, kind: str) -> IdxContent:
    """Read an IDX images (kind="images") or labels (kind="labels") file."""
    content = read_content(path)
    array = parse_idx(content, path, expected_dims=3 if kind == "images" else 1)
    if kind == "labels" and array.size and int(array.max()) >= NUM_CLASSES:
        index = int(np.argmax(array >= NUM_CLASSES))
        raise DataError(
            f"{path}: label {int(array[index])} at index {index} is outside 0-{NUM_CLASSES - 1}",
            "labels must be class numbers 0-9",
        )
    if array.shape[0] == 0:
        raise DataError(f"{path}: holds no {kind}", "download it again")
    return IdxContent(array=array, sha256=hashlib.sha256(content).hexdigest())


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[IdxContent, IdxContent]:
    images = read_idx(images_path, kind="images")
    labels = read_idx(labels_path, kind="labels")
    if len(images.array) != len(labels.array):
        raise DataError(
            f"{images_path} holds {len(images.array):,} images but {labels_path} holds "
            f"{len(labels.array):,} labels",
            "the two files must come from the same release; download both again",
        )
    return images, labels

"""Read the original IDX files (gzipped or not) into uint8 arrays, refusing bad ones.

Format (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, one 4-byte size per dimension, then the data in C order.

The header is read and checked first, so the reader never holds more than the header
promises: a claimed count over ``limits.max_images()`` or images that are not 28x28 are
refused before anything is allocated, an uncompressed file's size is compared with the
header before its data is read, and a gzip stream is inflated in chunks up to the promised
length plus one byte (which tells whether more data follows). A gzip bomb thus costs at
most the promised size (235 MB at the default bound), never the size it would inflate to.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fmnist.data.classes import IMAGE_SIZE, NUM_CLASSES
from fmnist.data.input_files import HashingReader, gzip_read_errors, open_regular_file
from fmnist.data.limits import RAISE_HINT, max_images
from fmnist.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
CHUNK = 1 << 20  # bytes inflated per read: bounds the temporary copy, not the result
_KIND_BY_DIMS = {3: "images", 1: "labels"}


@dataclass(frozen=True)
class IdxContent:
    array: np.ndarray  # uint8, (N, 28, 28) for images, (N,) for labels
    sha256: str  # of the decompressed file content


@dataclass(frozen=True)
class _RawIdx:
    header: bytes  # magic number and sizes, as in the file
    dims: tuple[int, ...]
    data: np.ndarray  # uint8, flat: the bytes after the header


@contextlib.contextmanager
def _decompressed(path: Path, file_digest: hashlib._Hash | None) -> Iterator[tuple[BinaryIO, int | None]]:
    """The file's content as a stream (inflated when it is gzip data) and, for an
    uncompressed file, its size in bytes (None for gzip: unknown until inflated).
    ``file_digest``, if given, is fed the file's bytes as they are read."""
    with open_regular_file(path) as raw:
        gzipped = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
        source = raw if file_digest is None else HashingReader(raw, file_digest)
        if gzipped:
            # Buffered: gzip reads its header (a name field may be megabytes) a byte at a
            # time, one Python call per byte through an unbuffered HashingReader.
            buffered = source if file_digest is None else io.BufferedReader(source, 1 << 16)
            with gzip.GzipFile(fileobj=buffered, mode="rb") as inflated:
                yield inflated, None
            return
        if path.suffix == ".gz":
            raise DataError(
                f"{path}: the name ends in .gz but the content is not gzip data",
                "download it again, or remove the .gz suffix if it is an uncompressed IDX file",
            )
        yield source, os.fstat(raw.fileno()).st_size


def _read_into(stream: BinaryIO, buffer: np.ndarray) -> int:
    """Fill ``buffer`` from ``stream`` in chunks; returns the number of bytes read."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled : filled + CHUNK])
        if not count:
            break
        filled += count
    return filled


def _check_header(path: Path, head: bytes, expected_dims: int | None) -> int:
    """Validate the 4-byte magic number; returns the number of dimensions."""
    if len(head) < 4:
        raise DataError(f"{path}: only {len(head)} bytes, too short to be an IDX file", "download it again")
    zero1, zero2, type_code, ndim = head
    allowed = (expected_dims,) if expected_dims is not None else tuple(_KIND_BY_DIMS)
    if zero1 != 0 or zero2 != 0 or type_code != UBYTE or ndim not in allowed:
        shown = expected_dims if expected_dims is not None else 3
        expected = f"0000{UBYTE:02x}{shown:02x}"
        raise DataError(
            f"{path}: wrong IDX magic number 0x{head.hex()} (expected 0x{expected}: unsigned bytes, "
            f"{shown} dimension{'s' if shown > 1 else ''})",
            "is this the right file? Fashion-MNIST images are idx3-ubyte, labels idx1-ubyte",
        )
    return ndim


def _check_dims(path: Path, dims: tuple[int, ...]) -> None:
    """Refuse shapes fmnist cannot use, before anything of that size is allocated."""
    if len(dims) == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{path}: images are {dims[1]}x{dims[2]} pixels, expected {IMAGE_SIZE}x{IMAGE_SIZE}",
            "fmnist works on 28x28 greyscale images; resize your data first",
        )
    limit = max_images()
    if dims[0] > limit:
        raise DataError(
            f"{path}: the header claims {dims[0]:,} {_KIND_BY_DIMS[len(dims)]}, more than the limit of {limit:,}",
            f"is this the right file? The official training file holds 60,000; {RAISE_HINT} if it is genuine",
        )


def _read_raw(path: Path, *, expected_dims: int | None, file_digest: hashlib._Hash | None = None) -> _RawIdx:
    with _decompressed(path, file_digest) as (stream, file_size), gzip_read_errors(path, "download it again"):
        head = stream.read(4)
        ndim = _check_header(path, head, expected_dims)
        sizes = stream.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise DataError(f"{path}: the IDX header is truncated", "download it again")
        dims = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
        _check_dims(path, dims)
        header = head + sizes
        expected_bytes = int(np.prod(dims, dtype=np.int64))
        if file_size is not None:
            _check_size(path, dims, expected_bytes, file_size - len(header))
        data = np.empty(expected_bytes, dtype=np.uint8)
        received = _read_into(stream, data)
        if received < expected_bytes:
            raise DataError(
                f"{path}: truncated: the header promises {expected_bytes:,} bytes of data for shape "
                f"{dims}, the file holds {received:,}",
                "download it again",
            )
        # One byte more tells whether data follows; for gzip it also reaches the stream's end,
        # where the CRC is checked.
        if stream.read(1):
            raise DataError(
                f"{path}: unexpected bytes after the {expected_bytes:,} bytes of data for shape {dims}",
                "the file is corrupt or not an IDX file; download it again",
            )
    return _RawIdx(header=header, dims=dims, data=data)


def _check_size(path: Path, dims: tuple[int, ...], expected_bytes: int, data_bytes: int) -> None:
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


def read_content(path: Path) -> bytes:
    """The file's IDX content (decompressed when it is gzip data), checked against its header."""
    raw = _read_raw(path, expected_dims=None)
    return raw.header + raw.data.tobytes()


def read_idx(
    path: Path, *, kind: str, file_digest: hashlib._Hash | None = None, num_classes: int = NUM_CLASSES
) -> IdxContent:
    """Read an IDX images (kind="images") or labels (kind="labels") file; labels must be
    below ``num_classes``. ``file_digest``, if given, is fed the file's bytes as read (the
    parsed-data cache keeps it)."""
    raw = _read_raw(path, expected_dims=3 if kind == "images" else 1, file_digest=file_digest)
    array = raw.data.reshape(raw.dims)
    if kind == "labels" and array.size and int(array.max()) >= num_classes:
        index = int(np.argmax(array >= num_classes))
        raise DataError(
            f"{path}: label {int(array[index])} at index {index} is outside 0-{num_classes - 1}",
            f"labels must be class numbers 0-{num_classes - 1}, or list more classes in a classes.txt next to the file",
        )
    if array.shape[0] == 0:
        raise DataError(f"{path}: holds no {kind}", "download it again")
    digest = hashlib.sha256(raw.header)
    digest.update(raw.data)
    return IdxContent(array=array, sha256=digest.hexdigest())


def read_idx_pair(
    images_path: Path,
    labels_path: Path,
    *,
    file_digests: tuple[hashlib._Hash, hashlib._Hash] | None = None,
    num_classes: int = NUM_CLASSES,
) -> tuple[IdxContent, IdxContent]:
    images_digest, labels_digest = file_digests or (None, None)
    images = read_idx(images_path, kind="images", file_digest=images_digest)
    labels = read_idx(labels_path, kind="labels", file_digest=labels_digest, num_classes=num_classes)
    if len(images.array) != len(labels.array):
        raise DataError(
            f"{images_path} holds {len(images.array):,} images but {labels_path} holds "
            f"{len(labels.array):,} labels",
            "the two files must come from the same release; download both again",
        )
    return images, labels

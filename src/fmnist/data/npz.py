"""Read a NumPy .npz file in the layout ``keras.datasets`` returns: ``x_train, y_train,
x_test, y_test`` (either split's pair may be absent).

Images must be uint8 (N, 28, 28) (or (N, 28, 28, 1)), labels integers (N,) (or (N, 1)).
Nothing is unpickled (``allow_pickle=False``), and each array's header is checked before
its data is read: a shape over ``limits.max_images()`` images, a wrong dtype or rank is
refused before anything of that size is allocated or inflated.
"""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fmnist.data.classes import IMAGE_SIZE
from fmnist.data.input_files import open_regular_file
from fmnist.data.limits import RAISE_HINT, max_images
from fmnist.errors import DataError

KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
LAYOUT_HINT = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) (the keras.datasets layout)"
# What reading a damaged .npz raises (BadZipFile: truncated; EOFError: empty; KeyError: no
# such array; zlib.error: damaged deflate data).
# RuntimeError: an encrypted member; NotImplementedError: an unknown compression method.
MAX_LABEL = 2**31 - 1  # far above any class count; what int64 holds safely
NPZ_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, RuntimeError, NotImplementedError)


def npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype of the .npy stream ``handle``, from its header
    alone: checked before any data is read or allocated."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(handle)


@contextlib.contextmanager
def _members(path: Path) -> Iterator[zipfile.ZipFile]:
    with open_regular_file(path) as handle:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise DataError(f"{path}: not a readable .npz file (not a zip archive)", LAYOUT_HINT) from None
        with archive:
            yield archive


def npz_splits(path: Path) -> list[str]:
    """The splits whose two arrays ``path`` holds; a DataError when one array of a pair is
    missing or neither pair is there."""
    with _members(path) as archive:
        names = {name.removesuffix(".npy") for name in archive.namelist()}
    found = []
    for split, keys in KEYS.items():
        present = [key for key in keys if key in names]
        if len(present) == 1:
            missing = next(key for key in keys if key not in names)
            raise DataError(f"{path}: has {present[0]} but no {missing}", LAYOUT_HINT)
        if present:
            found.append(split)
    if not found:
        shown = ", ".join(sorted(names)[:8]) or "no arrays"
        raise DataError(f"{path}: no x_train/y_train or x_test/y_test arrays (found: {shown})", LAYOUT_HINT)
    return found


def _read_array(archive: zipfile.ZipFile, path: Path, key: str, *, images: bool) -> np.ndarray:
    """One array, its header checked before its data is read."""
    where = f"{path}: {key}"
    try:
        with archive.open(f"{key}.npy") as member:
            shape, _fortran, dtype = npy_header(member)
    except NPZ_READ_ERRORS as error:
        raise DataError(f"{where}: not a readable array ({str(error)[:100] or type(error).__name__})", LAYOUT_HINT) from None
    if images:
        if dtype != np.uint8:
            raise DataError(
                f"{where} is {dtype}, expected uint8 pixels 0-255",
                "convert it: np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1]",
            )
        if shape[1:] not in ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1)):
            raise DataError(f"{where} has shape {shape}, expected (N, 28, 28) or (N, 28, 28, 1)", "fmnist reads 28x28 greyscale images")
    else:
        if dtype.kind not in "iu":
            raise DataError(f"{where} is {dtype}, expected integer class labels", "store the labels as integers 0..K-1")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise DataError(f"{where} has shape {shape}, expected (N,) or (N, 1)", "one label per image")
    if shape[0] > max_images():
        raise DataError(f"{where}: {shape[0]:,} entries, over the limit of {max_images():,}", RAISE_HINT)
    if shape[0] == 0:
        raise DataError(f"{where} is empty", "store at least one image per split")
    try:
        with archive.open(f"{key}.npy") as member:
            array = np.lib.format.read_array(member, allow_pickle=False)
    except MemoryError:
        raise DataError(f"{where}: not enough memory to read it", "free memory, or use a smaller file") from None
    except NPZ_READ_ERRORS as error:
        raise DataError(f"{where}: damaged or truncated ({str(error)[:100] or type(error).__name__})", LAYOUT_HINT) from None
    if not images and int(array.max()) > MAX_LABEL:  # a uint64 over 2**63 would wrap negative as int64
        index = int(np.argmax(array.reshape(-1) > MAX_LABEL))
        raise DataError(f"{where}[{index}] is {int(array.reshape(-1)[index]):,}, not a class number", "labels are class numbers from 0")
    return array.reshape(shape[0], IMAGE_SIZE, IMAGE_SIZE) if images else array.reshape(-1)


def read_npz_labels(path: Path) -> dict[str, np.ndarray]:
    """Each split's labels (int64), without reading the images."""
    with _members(path) as archive:
        return {
            split: _read_array(archive, path, KEYS[split][1], images=False).astype(np.int64) for split in npz_splits(path)
        }


def read_npz_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of ``split``; labels must be >= 0
    (their upper bound is the class count, checked by the caller)."""
    images_key, labels_key = KEYS[split]
    with _members(path) as archive:
        images = _read_array(archive, path, images_key, images=True)
        labels = _read_array(archive, path, labels_key, images=False)
    if len(images) != len(labels):
        raise DataError(f"{path}: {images_key} holds {len(images):,} images but {labels_key} {len(labels):,} labels", "one label per image")
    if labels.min() < 0:
        index = int(np.argmax(labels < 0))
        raise DataError(f"{path}: {labels_key}[{index}] is {int(labels[index])}, a negative label", "labels are class numbers from 0")
    return np.ascontiguousarray(images), labels.astype(np.int64)

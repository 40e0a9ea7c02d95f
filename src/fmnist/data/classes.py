"""Class names: Fashion-MNIST's ten by default, or the data's own (a classes.txt file, an
image folder's class folders, an .npz file's labels).

Label i is ``names[i]``. Every dataset fmnist trains on has 2 to ``MAX_CLASSES`` classes.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from fmnist.data.input_files import open_regular_file
from fmnist.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)  # Fashion-MNIST's; other data brings its own count
IMAGE_SIZE = 28  # pixels per side; every supported dataset is 28x28 greyscale

CLASSES_FILE = "classes.txt"  # one class name per line, label 0 first
MIN_CLASSES = 2
MAX_CLASSES = 100
MAX_CLASS_NAME = 100  # characters
_MAX_CLASSES_FILE_BYTES = 64 * 1024  # 100 names of 100 characters, UTF-8, fit in 41 KB


def is_fashion(names: tuple[str, ...] | list[str]) -> bool:
    """Whether ``names`` are Fashion-MNIST's classes in label order (what the Fashion-only
    features, such as the tops specialist, need)."""
    return tuple(names) == CLASS_NAMES


def has_control_character(name: str) -> bool:
    """Whether ``name`` holds a control, format or other non-printing character (a terminal
    escape, a carriage return, a bidi override): names are printed and written into reports."""
    return any(unicodedata.category(char).startswith("C") for char in name)


def check_class_names(names: list[str], where: str) -> tuple[str, ...]:
    """``names`` as a tuple, or a DataError naming ``where`` (the file or folder they came
    from): 2 to 100 distinct names of 1 to 100 printable characters."""
    fix = f"name {MIN_CLASSES} to {MAX_CLASSES} distinct classes"
    if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
        raise DataError(f"{where}: {len(names)} classes; fmnist trains on {MIN_CLASSES} to {MAX_CLASSES}", fix)
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not 1 <= len(name) <= MAX_CLASS_NAME:
            raise DataError(f"{where}: class {index} has a name of {len(name)} characters", f"use 1 to {MAX_CLASS_NAME}")
        if has_control_character(name):
            raise DataError(f"{where}: class {index} ({name[:40]!r}) has a control character in its name", "use printable names")
        if name in seen:
            raise DataError(f"{where}: class name {name!r} appears twice", fix)
        seen.add(name)
    return tuple(names)


def read_classes_file(path: Path) -> tuple[str, ...]:
    """The class names in a classes.txt: one per line, label 0 first; surrounding spaces
    and blank lines are ignored."""
    with open_regular_file(path) as handle:
        data = handle.read(_MAX_CLASSES_FILE_BYTES + 1)
    if len(data) > _MAX_CLASSES_FILE_BYTES:
        raise DataError(f"{path}: over {_MAX_CLASSES_FILE_BYTES:,} bytes, too large for a list of class names", "one name per line")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text", "save it as UTF-8, one class name per line") from None
    return check_class_names([line.strip() for line in text.splitlines() if line.strip()], str(path))

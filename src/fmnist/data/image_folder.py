"""Read an image folder: ``ROOT/train/<class>/*.png`` and ``ROOT/test/<class>/...``, the
layout of torchvision's ImageFolder and Keras' ``image_dataset_from_directory``.

Class names are the sorted names of the class folders (of train/, or of test/ when there
is no train/), unless ROOT/classes.txt names them. Files may sit in sub-folders of a class
folder; hidden files (``.DS_Store``) are skipped, any other non-image file is refused by
name. Every image is prepared as `fmnist predict` prepares one (inference/photo.py): a
dataset-style 28x28 image (light object on black) is taken as is, anything else goes
through the dataset's own steps (trim, subsample to 28, sharpen, centre, negate, grey).

Sizes: a split whose images are all 28x28, or all other sizes (photos), is read; a split
that mixes 28x28 images with larger ones is refused, because the two kinds are prepared
differently (the first taken as is, the second converted) and such a mix is usually two
sources combined by mistake.
"""

from __future__ import annotations

import logging
import os
import stat
import unicodedata
from pathlib import Path

import numpy as np

from fmnist.data.classes import CLASSES_FILE, IMAGE_SIZE, check_class_names
from fmnist.data.input_files import (
    MAX_FOLDER_DEPTH,
    check_readable_folder,
    check_regular_file,
    not_regular_error,
    open_regular_file,
    stat_input,
)
from fmnist.data.limits import RAISE_HINT, max_images
from fmnist.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_FILE_BYTES = 20 * 1024 * 1024  # one training image; a 24-megapixel JPEG is ~10 MB
LAYOUT_HINT = "lay it out as ROOT/train/<class>/*.png and ROOT/test/<class>/*.png"

log = logging.getLogger(__name__)


def _listing(folder: Path) -> list[os.DirEntry]:
    check_readable_folder(folder)
    with os.scandir(folder) as entries:
        return sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda entry: entry.name)


def is_image_folder(root: Path) -> bool:
    """Whether ``root`` holds a train/ or test/ folder (the image-folder layout)."""
    return any((root / split).is_dir() for split in ("train", "test"))


def class_folders(split_folder: Path) -> list[str]:
    """The class folder names directly under ``split_folder``, sorted; files there are refused."""
    names = []
    for entry in _listing(split_folder):
        if entry.is_dir(follow_symlinks=False):
            names.append(entry.name)
        else:
            raise DataError(f"{entry.path}: not in a class folder", f"move it into {split_folder}/<class>/; {LAYOUT_HINT}")
    if not names:
        raise DataError(f"{split_folder}: no class folders", LAYOUT_HINT)
    return names


def folder_class_names(root: Path, splits: list[str]) -> tuple[str, ...]:
    """Class names from the class folders (train/'s, else test/'s)."""
    split = "train" if "train" in splits else splits[0]
    return check_class_names(class_folders(root / split), str(root / split))


def image_files(split_folder: Path, class_names: tuple[str, ...]) -> list[tuple[Path, int]]:
    """Every image file of the split with its label; refuses a class folder that is not in
    ``class_names``, an empty class folder and non-image files."""
    found: list[tuple[Path, int]] = []
    ranks: dict[Path, int] = {}  # a file's place within its class folder's sorted files
    for name in class_folders(split_folder):
        if name not in class_names:
            twin = next((known for known in class_names if unicodedata.normalize("NFC", known) == unicodedata.normalize("NFC", name)), None)
            if twin is not None:  # café spelled with a combining accent in one folder, precomposed in the other
                raise DataError(
                    f"{split_folder / name}: class {name!r} looks like the training class {twin!r} but is spelled with "
                    "other Unicode characters (composed and decomposed accents)",
                    "rename one of the two folders so that both are spelled the same",
                )
            raise DataError(
                f"{split_folder / name}: class {name!r} is not among the training classes ({', '.join(class_names[:12])})",
                "every test class needs a train/ folder of the same name, or list all classes in ROOT/classes.txt",
            )
        files = _class_files(split_folder / name)
        if not files:
            raise DataError(f"{split_folder / name}: an empty class folder (no images)", "add images or remove the folder")
        found.extend((path, class_names.index(name)) for path in files)
        ranks.update((path, rank) for rank, path in enumerate(files))
        if len(found) > max_images():
            raise DataError(f"{split_folder}: more than {max_images():,} images", RAISE_HINT)
    # Interleaved by class (the first file of each class, then the second, ...), so that the
    # first N images (a --subset run) hold every class, as in the shuffled IDX files.
    found.sort(key=lambda item: (ranks[item[0]], item[1]))
    return found


def _class_files(folder: Path, depth: int = 0) -> list[Path]:
    if depth > MAX_FOLDER_DEPTH:
        raise DataError(f"{folder}: folders nested more than {MAX_FOLDER_DEPTH} deep", "flatten the class folders")
    files: list[Path] = []
    for entry in _listing(folder):
        path = Path(entry.path)
        status = stat_input(path)
        if status is None or (stat.S_ISDIR(status.st_mode) and entry.is_symlink()):
            continue  # a dangling link; links to folders are not followed (as inputs.py does)
        if stat.S_ISDIR(status.st_mode):
            files.extend(_class_files(path, depth + 1))
        elif not stat.S_ISREG(status.st_mode):
            raise not_regular_error(path, status.st_mode)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        else:
            raise DataError(
                f"{path}: not an image file (by its name)",
                f"keep only {', '.join(IMAGE_SUFFIXES)} files in the class folders, or remove it",
            )
    return files


def _read_image(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """The prepared 28x28 image and the file's own size (width, height)."""
    from fmnist.inference.photo import (
        DEFAULT_MAX_PIXELS,
        PHOTO_FORMATS,
        WORKING_EDGE,
        decode_opened,
        open_header,
        prepare_image,
    )

    status = check_regular_file(path)
    if status.st_size > MAX_IMAGE_FILE_BYTES:
        raise DataError(f"{path}: {status.st_size:,} bytes, over the limit of {MAX_IMAGE_FILE_BYTES:,} for one image", "use a smaller image")
    with (
        open_regular_file(path) as handle,
        open_header(handle, str(path), max_pixels=DEFAULT_MAX_PIXELS, formats=PHOTO_FORMATS) as header,
    ):
        size = header.size  # before decoding: a JPEG's draft mode shrinks it
        # Prepared inside the block: the decoded image may share the opened file's core.
        return prepare_image(decode_opened(header, str(path), max_edge=WORKING_EDGE)).image, size


def read_image_split(split_folder: Path, class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """uint8 images (N, 28, 28), int64 labels (N,) and the files, classes interleaved (see image_files)."""
    files = image_files(split_folder, class_names)
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    labels = np.array([label for _, label in files], dtype=np.int64)
    if split_folder.name == "train":
        absent = [name for index, name in enumerate(class_names) if not (labels == index).any()]
        if absent:  # classes.txt names a class that has no train/ folder: a model output never trained
            log.warning(
                "%s: no training images for %s (named in %s); the model will have an output it never learned",
                split_folder, ", ".join(repr(name) for name in absent[:5]), CLASSES_FILE,
            )
    small = large = None
    for index, (path, _label) in enumerate(files):
        images[index], size = _read_image(path)
        if size == (IMAGE_SIZE, IMAGE_SIZE):
            small = small or path
        else:
            large = large or (path, size)
        if small is not None and large is not None:
            raise DataError(
                f"{split_folder}: mixed image sizes: {small} is 28x28 but {large[0]} is {large[1][0]}x{large[1][1]}",
                "use only 28x28 dataset-style images, or only photos (each then prepared as `fmnist predict` does)",
            )
    return images, labels, [path for path, _ in files]

"""Find the data: --data, then $FMNIST_DATA, the user cache, the system copy, a download.

A folder may hold the original IDX files (gzipped or not) or the Kaggle CSVs, or be an
image folder (train/<class>/*.png, test/<class>/...); a single CSV or .npz file may also be
named directly. A classes.txt in the folder (next to the file) names the classes; without
one, IDX and CSV data get Fashion-MNIST's names, an image folder its class folders' names
and an .npz file "0".."K-1". Nothing here parses pixels: it only decides which files to
read and what the classes are called.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from fmnist.data.classes import (
    CLASS_NAMES,
    CLASSES_FILE,
    MAX_CLASSES,
    MIN_CLASSES,
    check_class_names,
    read_classes_file,
)
from fmnist.data.input_files import (
    kind_of,
    not_regular_error,
    stat_input,
)
from fmnist.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
# Debian's package dataset-fashion-mnist installs the original files here.
DEFAULT_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_CSV_NAMES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}


@dataclass(frozen=True)
class SplitFiles:
    """The files that hold one split: (images, labels) for IDX, (csv,) for CSV."""

    split: str
    format: str  # "idx", "csv", "npz" or "images" (an image folder: paths = (ROOT/split,))
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class DataSource:
    """Where the data was found and which files hold each split."""

    root: Path
    origin: str  # "--data", "$FMNIST_DATA", "cache", "system" or "download"
    splits: dict[str, SplitFiles] = field(default_factory=dict)
    class_names: tuple[str, ...] = CLASS_NAMES  # label i is class_names[i]
    classes_file: Path | None = None  # the classes.txt they were read from, if any

    def files(self, split: str) -> SplitFiles:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
        if split not in self.splits:
            raise DataError(
                f"{self.root}: no {split} data here (found: {', '.join(self.splits) or 'nothing usable'})",
                f"add the {split} files ({expected_names(split)})",
            )
        return self.splits[split]


def cache_root() -> Path:
    """The user cache folder ($FMNIST_CACHE overrides the platform's default)."""
    override = os.environ.get("FMNIST_CACHE")
    return Path(override) if override else platformdirs.user_cache_path("fmnist")


def cache_data_dir() -> Path:
    return cache_root() / "data"


def system_data_dirs() -> tuple[Path, ...]:
    """Where system-wide copies are looked for ($FMNIST_SYSTEM_DATA, ':'-separated, overrides)."""
    override = os.environ.get("FMNIST_SYSTEM_DATA")
    if override is not None:
        return tuple(Path(part) for part in override.split(os.pathsep) if part)
    return DEFAULT_SYSTEM_DIRS


def expected_names(split: str) -> str:
    prefix = _IDX_PREFIX[split]
    return (
        f"{prefix}-images-idx3-ubyte[.gz] + {prefix}-labels-idx1-ubyte[.gz], or {_CSV_NAMES[split]}"
    )


def _first_existing(folder: Path, stems: list[str]) -> Path | None:
    """The first candidate name present in ``folder``; one present under a data file's
    name but not a regular file (a FIFO, a device) is refused rather than skipped."""
    for stem in stems:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            status = stat_input(candidate)
            if status is None:
                continue
            if not stat.S_ISREG(status.st_mode):
                raise not_regular_error(candidate, status.st_mode)
            return candidate
    return None


def scan_folder(folder: Path) -> dict[str, SplitFiles]:
    """The splits found in ``folder`` (IDX preferred over CSV when both are present)."""
    found: dict[str, SplitFiles] = {}
    for split in SPLITS:
        prefix = _IDX_PREFIX[split]
        # Mirrors spell the names with '-' or '.' before idxN.
        images = _first_existing(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
        labels = _first_existing(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
        if images and labels:
            found[split] = SplitFiles(split, "idx", (images, labels))
            continue
        csv_path = _first_existing(folder, [_CSV_NAMES[split]])
        if csv_path:
            found[split] = SplitFiles(split, "csv", (csv_path,))
    return found


def source_from_path(path: Path, origin: str) -> DataSource:
    """A DataSource for a user-named folder, CSV or .npz file, or a DataError saying what is missing."""
    path = path.expanduser()
    status = stat_input(path)
    if status is None:
        raise DataError(f"{path}: no such file or folder", f"check the path given by {origin}")
    if stat.S_ISREG(status.st_mode):
        return _with_classes(DataSource(root=path, origin=origin, splits=_file_splits(path)), path.parent)
    if not stat.S_ISDIR(status.st_mode):
        raise DataError(
            f"{path}: not a folder or a regular file but a {kind_of(status.st_mode)}",
            "name a folder holding the data files, or a .csv or .npz file; pipes and devices are not read",
        )
    # Only search permission is needed (the files are looked up by name); without it the
    # first lookup is a one-line "permission denied".
    splits = scan_folder(path)
    if not splits:
        from fmnist.data.image_folder import is_image_folder

        if is_image_folder(path):
            found = [split for split in SPLITS if (path / split).is_dir()]
            splits = {split: SplitFiles(split, "images", (path / split,)) for split in found}
        else:
            raise DataError(
                f"{path}: nothing usable in this folder",
                f"expected {expected_names('train')}; and/or {expected_names('test')}; "
                "or an image folder (train/<class>/*.png, test/<class>/*.png)",
            )
    return _with_classes(DataSource(root=path, origin=origin, splits=splits), path)


def _file_splits(path: Path) -> dict[str, SplitFiles]:
    name = path.name.lower()
    if name.endswith(".npz"):
        from fmnist.data.npz import npz_splits

        return {split: SplitFiles(split, "npz", (path,)) for split in npz_splits(path)}
    if name.endswith((".csv", ".csv.gz")):
        return {split: SplitFiles(split, "csv", (path,)) for split in SPLITS}
    raise DataError(
        f"{path}: a single file must be a Kaggle-layout CSV or an .npz file (x_train, y_train, x_test, y_test)",
        "name a folder holding the IDX files or an image folder, or a .csv or .npz file",
    )


def _with_classes(source: DataSource, folder: Path) -> DataSource:
    """``source`` with its class names: from ``folder``/classes.txt, else by the format's default."""
    classes_file = folder / CLASSES_FILE
    status = stat_input(classes_file)
    if status is not None:
        if not stat.S_ISREG(status.st_mode):
            raise not_regular_error(classes_file, status.st_mode)
        return replace(source, class_names=read_classes_file(classes_file), classes_file=classes_file)
    formats = {files.format for files in source.splits.values()}
    if "images" in formats:
        from fmnist.data.image_folder import folder_class_names

        return replace(source, class_names=folder_class_names(source.root, list(source.splits)))
    if "npz" in formats:
        from fmnist.data.npz import read_npz_labels

        highest = max(int(labels.max()) for labels in read_npz_labels(source.root).values())
        if highest >= MAX_CLASSES:  # refused before a name is made for every label up to it
            raise DataError(
                f"{source.root} (labels 0-{highest:,}, no {CLASSES_FILE}): {highest + 1:,} classes; fmnist trains on "
                f"{MIN_CLASSES} to {MAX_CLASSES}",
                f"number the classes from 0 to at most {MAX_CLASSES - 1}",
            )
        names = check_class_names([str(label) for label in range(highest + 1)], f"{source.root} (labels 0-{highest}, no {CLASSES_FILE})")
        return replace(source, class_names=names)
    return source


def find_existing_source(data: str | os.PathLike[str] | None = None) -> DataSource | None:
    """The first source in the search order that exists, without downloading anything.

    An explicitly named source (``data`` or $FMNIST_DATA) that is unusable is an error,
    never silently skipped.
    """
    if data is not None:
        return source_from_path(Path(data), "--data")
    env = os.environ.get("FMNIST_DATA")
    if env:
        return source_from_path(Path(env), "$FMNIST_DATA")
    for folder, origin in [(cache_data_dir(), "cache")] + [(d, "system") for d in system_data_dirs()]:
        try:
            status = stat_input(folder)
            if status is None or not stat.S_ISDIR(status.st_mode):
                continue
            splits = scan_folder(folder)
        except DataError as error:
            # A copy this user cannot read is passed over, as one that is not there.
            log.warning("skipping %s", error)
            continue
        if all(split in splits for split in SPLITS):
            return DataSource(root=folder, origin=origin, splits=splits)
    return None


def no_data_message(reason: str) -> DataError:
    return DataError(
        f"no Fashion-MNIST data found and it could not be downloaded ({reason})",
        "get it one of these ways: install Debian's package (apt install dataset-fashion-mnist); "
        "download the four original files from https://github.com/zalandoresearch/fashion-mnist "
        f"into {cache_data_dir()}; or put the Kaggle CSVs (fashion-mnist_train.csv, "
        "fashion-mnist_test.csv) in a folder and pass --data FOLDER or set FMNIST_DATA=FOLDER",
    )

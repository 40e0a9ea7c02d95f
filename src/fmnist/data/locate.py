"""Find the data: --data, then $FMNIST_DATA, the user cache, the system copy, a download.

A folder may hold the original IDX files (gzipped or not) or the Kaggle CSVs; a single
CSV file may also be named directly. Nothing here parses pixels: it only decides which
files to read.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

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
    format: str  # "idx" or "csv"
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class DataSource:
    """Where the data was found and which files hold each split."""

    root: Path
    origin: str  # "--data", "$FMNIST_DATA", "cache", "system" or "download"
    splits: dict[str, SplitFiles] = field(default_factory=dict)

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
    """A DataSource for a user-named folder or CSV file, or a DataError saying what is missing."""
    path = path.expanduser()
    status = stat_input(path)
    if status is None:
        raise DataError(f"{path}: no such file or folder", f"check the path given by {origin}")
    if stat.S_ISREG(status.st_mode):
        if path.suffix.lower() != ".csv" and not path.name.lower().endswith(".csv.gz"):
            raise DataError(
                f"{path}: a single file must be a Kaggle-layout CSV",
                "name a folder holding the IDX files, or a .csv file",
            )
        files = {split: SplitFiles(split, "csv", (path,)) for split in SPLITS}
        return DataSource(root=path, origin=origin, splits=files)
    if not stat.S_ISDIR(status.st_mode):
        raise DataError(
            f"{path}: not a folder or a regular file but a {kind_of(status.st_mode)}",
            "name a folder holding the data files, or a .csv file; pipes and devices are not read",
        )
    # Only search permission is needed (the files are looked up by name); without it the
    # first lookup is a one-line "permission denied".
    splits = scan_folder(path)
    if not splits:
        raise DataError(
            f"{path}: nothing usable in this folder",
            f"expected {expected_names('train')}; and/or {expected_names('test')}",
        )
    return DataSource(root=path, origin=origin, splits=splits)


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

"""Expand what the user passes to `fmnist predict` (image files, folders searched
recursively, Kaggle-layout CSVs) into prepared 28x28 inputs, one error per bad file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmnist.data.input_files import (
    MAX_FOLDER_DEPTH,
    check_readable_folder,
    kind_of,
    permission_error,
    stat_input,
)
from fmnist.errors import DataError
from fmnist.inference.photo import prepare_photo

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass
class InputItem:
    path: str  # file path, or "file.csv#row" (row 1 = first image) for a CSV row
    image: np.ndarray | None = None  # uint8 (28, 28), None when the input failed
    label: int | None = None  # true class when a CSV carries labels
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # one line: why this input was skipped


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES)


def _is_input_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or _is_csv(path)


def _not_regular(path: Path, mode: int) -> DataError:
    # Checked before anything opens the path: a FIFO would block and a device never end.
    return DataError(
        f"{path}: not a regular file but a {kind_of(mode)}",
        "name image files, folders or CSV files; pipes and devices are not read",
    )


def _folder_files(folder: Path) -> Iterator[tuple[Path, DataError | None]]:
    """The image and CSV files under ``folder``, sorted; sub-folders that cannot be read
    and FIFOs or devices under input names come with an error instead of being skipped
    silently. Links to folders are not followed (as with ``Path.rglob``)."""
    check_readable_folder(folder)
    found: list[Path] = []
    problems: list[tuple[Path, DataError]] = []

    def unreadable(error: OSError) -> None:
        where = Path(error.filename)
        if isinstance(error, PermissionError):
            problems.append((where, permission_error(where)))
        else:
            problems.append((where, DataError(f"{where}: cannot read ({error.strerror})", "check the path")))

    base_depth = len(folder.parts)
    for root, folders, names in os.walk(folder, onerror=unreadable):
        if len(Path(root).parts) - base_depth >= MAX_FOLDER_DEPTH and folders:
            # os.walk recurses (Python 3.11): a tree thousands deep would end in RecursionError.
            problems.append((Path(root), DataError(f"{root}: folders nested more than {MAX_FOLDER_DEPTH} deep", "flatten the folder")))
            folders.clear()
        found.extend(Path(root, name) for name in names if _is_input_name(Path(name)))
    yield from problems
    for child in sorted(found):
        try:
            status = stat_input(child)
        except DataError as error:
            yield child, error
            continue
        if status is None or stat.S_ISDIR(status.st_mode):  # a dangling link, a folder named x.png
            continue
        yield child, None if stat.S_ISREG(status.st_mode) else _not_regular(child, status.st_mode)


def _files(argument: str) -> Iterator[tuple[Path, DataError | None]]:
    """Each input path with the reason it cannot be read, when that is known before opening."""
    path = Path(argument).expanduser()
    try:
        status = stat_input(path)
        if status is not None and stat.S_ISDIR(status.st_mode):
            yield from _folder_files(path)
            return
    except DataError as error:
        yield path, error
        return
    if status is not None and not stat.S_ISREG(status.st_mode):
        yield path, _not_regular(path, status.st_mode)
    else:
        yield path, None  # a missing file is reported when it is read


def _csv_items(path: Path) -> Iterator[InputItem]:
    from fmnist.data.classes import MAX_CLASSES
    from fmnist.data.kaggle_csv import read_kaggle_csv

    # Labels of any dataset fmnist trains on (the model's own classes are checked by the caller).
    images, labels = read_kaggle_csv(path, require_labels=False, num_classes=MAX_CLASSES)
    for row, image in enumerate(images):
        yield InputItem(f"{path}#{row + 1}", image=image, label=None if labels is None else int(labels[row]))


def expand_inputs(arguments: list[str], *, raw: bool = False) -> Iterator[InputItem]:
    """One InputItem per image (files in argument order, folders sorted); bad files become
    items with ``error`` set instead of stopping the run."""
    for argument in arguments:
        if argument == "-" and not Path("-").exists():
            yield InputItem("-", error="-: images are not read from standard input (save them as files and pass their paths)")
            continue
        for path, problem in _files(argument):
            try:
                if problem is not None:
                    raise problem
                if _is_csv(path):
                    yield from _csv_items(path)
                    continue
                prepared = prepare_photo(path, raw=raw)
            except DataError as error:
                message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
                yield InputItem(str(path), error=message)
                continue
            yield InputItem(str(path), image=prepared.image, warnings=prepared.warnings)

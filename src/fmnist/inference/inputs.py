"""Expand what the user passes to `fmnist predict` (image files, folders searched
recursively, Kaggle-layout CSVs) into prepared 28x28 inputs, one error per bad file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def _files(argument: str) -> Iterator[Path]:
    path = Path(argument).expanduser()
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and (child.suffix.lower() in IMAGE_SUFFIXES or _is_csv(child)):
                yield child
    else:
        yield path  # a missing file is reported when it is read


def _csv_items(path: Path) -> Iterator[InputItem]:
    from fmnist.data.kaggle_csv import read_kaggle_csv

    images, labels = read_kaggle_csv(path, require_labels=False)
    for row, image in enumerate(images):
        yield InputItem(f"{path}#{row + 1}", image=image, label=None if labels is None else int(labels[row]))


def expand_inputs(arguments: list[str], *, raw: bool = False) -> Iterator[InputItem]:
    """One InputItem per image (files in argument order, folders sorted); bad files become
    items with ``error`` set instead of stopping the run."""
    for argument in arguments:
        for path in _files(argument):
            try:
                if _is_csv(path):
                    if not path.is_file():
                        raise DataError(f"{path}: no such file", "check the path")
                    yield from _csv_items(path)
                    continue
                prepared = prepare_photo(path, raw=raw)
            except DataError as error:
                message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
                yield InputItem(str(path), error=message)
                continue
            yield InputItem(str(path), image=prepared.image, warnings=prepared.warnings)

"""Write the data as Kaggle-layout CSVs."""

from __future__ import annotations

from pathlib import Path

from fmnist.data.kaggle_csv import write_kaggle_csv
from fmnist.data.loading import load
from fmnist.data.locate import DataSource
from fmnist.files import atomic_path

CSV_NAMES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}


def export_csv(source: DataSource, folder: Path) -> list[Path]:
    """Write fashion-mnist_train.csv and fashion-mnist_test.csv into ``folder``."""
    written = []
    for split, name in CSV_NAMES.items():
        loaded = load(split, source=source)
        target = folder / name
        with atomic_path(target) as tmp:
            write_kaggle_csv(tmp, loaded.images, loaded.labels)
        written.append(target)
    return written

"""Write the data as Kaggle-layout CSVs (and a classes.txt when the classes are not Fashion-MNIST's)."""

from __future__ import annotations

from pathlib import Path

from fmnist.data.classes import CLASSES_FILE, is_fashion
from fmnist.data.kaggle_csv import write_kaggle_csv
from fmnist.data.loading import load
from fmnist.data.locate import DataSource
from fmnist.errors import ConfigError
from fmnist.files import atomic_path, atomic_write_text, same_file

CSV_NAMES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}


def export_csv(source: DataSource, folder: Path) -> list[Path]:
    """Write fashion-mnist_train.csv and fashion-mnist_test.csv into ``folder``, and the
    class names as classes.txt unless they are Fashion-MNIST's."""
    # The data read must not be the data replaced (`export-csv DIR --data DIR` of Kaggle CSVs).
    inputs = [path for files in source.splits.values() for path in files.paths]
    if source.classes_file is not None:
        inputs.append(source.classes_file)
    for name in (*CSV_NAMES.values(), CLASSES_FILE):
        for path in inputs:
            if same_file(folder / name, path):
                raise ConfigError(f"exporting into {folder} would replace {path}, which the export reads", "choose another folder")
    written = []
    for split, name in CSV_NAMES.items():
        loaded = load(split, source=source)
        target = folder / name
        with atomic_path(target) as tmp:
            write_kaggle_csv(tmp, loaded.images, loaded.labels)
        written.append(target)
    if not is_fashion(source.class_names):
        atomic_write_text(folder / CLASSES_FILE, "".join(f"{name}\n" for name in source.class_names))
        written.append(folder / CLASSES_FILE)
    return written

"""Own-data files for tests, generated with Pillow and numpy: image folders and .npz files
(shared by the data, training and end-to-end tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("circle", "cross", "square")  # sorted: the folder order is the label order


def bar_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable 28x28 dataset-style image: class k is a bright bar at row 4 + 8k on black."""
    image = rng.integers(0, 40, size=(28, 28), dtype=np.uint8)
    image[4 + 8 * label : 7 + 8 * label, 4:24] = 230
    return image


def write_image_folder(root: Path, classes: tuple[str, ...] = SHAPES, *, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """ROOT/train/<class>/*.png and ROOT/test/<class>/*.png of ``bar_image``s."""
    rng = np.random.default_rng(seed)
    counts = per_class or {"train": 20, "test": 5}
    for split, count in counts.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(bar_image(label, rng)).save(folder / f"{index:03d}.png")
    return root


def write_npz(path: Path, *, classes: int = 4, train: int = 40, test: int = 12, **overrides: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(train, dtype=np.uint8) % classes,
        "x_test": rng.integers(0, 256, size=(test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(test, dtype=np.int64) % classes,
    }
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path

"""Fixtures shared by the whole test suite.

Data fixtures (tiny datasets written as real IDX and Kaggle CSV files) come first; other
parts of the suite add theirs below. Every test runs with its own empty fmnist cache.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_result import CliResult

# The real release, as Debian's dataset-fashion-mnist installs it (CI has it too).
REAL_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
REAL_FMNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CSV_NAMES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}
CSV_HEADER = "label," + ",".join(f"pixel{i}" for i in range(1, 785))


@dataclass(frozen=True)
class TinyData:
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # int64 (N,)


class DataFiles:
    """Writes tiny datasets as real files, independently of fmnist's own writers."""

    @staticmethod
    def tiny(count: int = 50, *, seed: int = 0) -> TinyData:
        """``count`` random images; labels cycle through all ten classes, then are shuffled."""
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(count) % 10).astype(np.int64)
        return TinyData(images, labels)

    @staticmethod
    def dataset(images: np.ndarray, labels: np.ndarray) -> TinyData:
        return TinyData(np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64))

    @staticmethod
    def idx_bytes(array: np.ndarray, *, magic: bytes | None = None) -> bytes:
        """An IDX file: 0x0000, type 0x08 (ubyte), ndim, big-endian sizes, then the data."""
        header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
        sizes = b"".join(int(size).to_bytes(4, "big") for size in array.shape)
        return header + sizes + np.ascontiguousarray(array, dtype=np.uint8).tobytes()

    @classmethod
    def idx(cls, path: Path, array: np.ndarray) -> Path:
        """Write ``array`` as an IDX file, gzipped when the name ends in .gz."""
        content = cls.idx_bytes(array)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(content, mtime=0) if path.suffix == ".gz" else content)
        return path

    @classmethod
    def idx_split(cls, folder: Path, data: TinyData, *, split: str = "train", gzipped: bool = True) -> tuple[Path, Path]:
        """Write one split's images and labels under their official names."""
        suffix = ".gz" if gzipped else ""
        images_name, labels_name = IDX_NAMES[split]
        return (
            cls.idx(folder / f"{images_name}{suffix}", data.images),
            cls.idx(folder / f"{labels_name}{suffix}", data.labels),
        )

    @staticmethod
    def csv_text(data: TinyData, *, header: bool = True) -> str:
        rows = np.column_stack([data.labels, data.images.reshape(len(data.labels), -1)])
        lines = ([CSV_HEADER] if header else []) + [",".join(map(str, row)) for row in rows.tolist()]
        return "\n".join(lines) + "\n"

    @classmethod
    def csv(cls, path: Path, data: TinyData, *, header: bool = True) -> Path:
        """Write a Kaggle-layout CSV (gzipped when the name ends in .gz)."""
        text = cls.csv_text(data, header=header).encode("ascii")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)
        return path

    @classmethod
    def csv_split(cls, folder: Path, data: TinyData, *, split: str = "train") -> Path:
        return cls.csv(folder / CSV_NAMES[split], data)


@pytest.fixture
def data_files() -> type[DataFiles]:
    """Helpers that write tiny IDX files and Kaggle CSVs (see DataFiles)."""
    return DataFiles


@pytest.fixture
def tiny_train() -> TinyData:
    return DataFiles.tiny(50, seed=0)


@pytest.fixture
def tiny_test() -> TinyData:
    return DataFiles.tiny(20, seed=1)


@pytest.fixture
def tiny_idx_dir(tmp_path: Path, tiny_train: TinyData, tiny_test: TinyData) -> Path:
    """A folder with both splits as gzipped IDX files."""
    folder = tmp_path / "tiny-idx"
    DataFiles.idx_split(folder, tiny_train, split="train")
    DataFiles.idx_split(folder, tiny_test, split="test")
    return folder


@pytest.fixture
def tiny_csv_dir(tmp_path: Path, tiny_train: TinyData, tiny_test: TinyData) -> Path:
    """A folder with both splits as Kaggle CSVs."""
    folder = tmp_path / "tiny-csv"
    DataFiles.csv_split(folder, tiny_train, split="train")
    DataFiles.csv_split(folder, tiny_test, split="test")
    return folder


@pytest.fixture
def real_fmnist_dir() -> Path:
    """The real Fashion-MNIST files; the test is skipped where they are not installed."""
    if not all((REAL_FMNIST_DIR / name).is_file() for name in REAL_FMNIST_FILES):
        pytest.skip(f"the real dataset is not in {REAL_FMNIST_DIR} (apt install dataset-fashion-mnist)")
    return REAL_FMNIST_DIR


@pytest.fixture(autouse=True)
def isolated_fmnist_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty fmnist cache and no $FMNIST_DATA from the caller."""
    cache = tmp_path_factory.mktemp("fmnist-cache")
    monkeypatch.setenv("FMNIST_CACHE", str(cache))
    monkeypatch.delenv("FMNIST_DATA", raising=False)
    return cache


@pytest.fixture
def run_fmnist(tmp_path: Path):
    """Run ``python -m fmnist ARGS`` in a subprocess with the test's (isolated) environment."""

    def run(*args: str) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "fmnist", *args],
            cwd=tmp_path,
            env=dict(os.environ),
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run



def learnable_data(count: int, *, seed: int) -> TinyData:
    """Images a model can learn in a few steps: class k is a bright bar at row 2 + 2k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % 10).astype(np.int64)
    images = rng.integers(0, 60, size=(count, 28, 28), dtype=np.uint8)
    rows = 2 + 2 * labels
    images[np.arange(count), rows, 4:24] = 230
    return TinyData(images, labels)


def write_learnable(folder: Path, *, train: int = 400, test: int = 100) -> Path:
    """IDX files of a small learnable dataset in ``folder``: 400 training and 100 test images."""
    DataFiles.idx_split(folder, learnable_data(train, seed=0), split="train")
    DataFiles.idx_split(folder, learnable_data(test, seed=1), split="test")
    return folder


@pytest.fixture(scope="session")
def learnable_writer():
    """``write_learnable`` for fixtures of other test folders: importing it from
    ``conftest`` is ambiguous once several test folders have a conftest.py."""
    return write_learnable


@pytest.fixture
def learnable_dir(tmp_path: Path) -> Path:
    """IDX files of a small learnable dataset: 400 training and 100 test images."""
    return write_learnable(tmp_path / "learnable")


# A seed_cnn small enough that a training epoch over 400 images takes well under a second.
SMALL_MODEL_TOML = """
recipe = "seed"
model = "seed_cnn"
epochs = 3
batch_size = 32
[model_args]
width = 8
hidden = 16
"""


@pytest.fixture(scope="session")
def small_model_toml() -> str:
    """The small seed_cnn config's text (for module- and session-scoped fixtures)."""
    return SMALL_MODEL_TOML


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL_MODEL_TOML)
    return path


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a fairly accurate model (~88-90%) trained once per test session on
    the real data: the fast recipe on 12,000 training images for 3 epochs (~20 s here).
    Skipped where the real dataset is not installed."""
    if not all((REAL_FMNIST_DIR / name).is_file() for name in REAL_FMNIST_FILES):
        pytest.skip(f"the real dataset is not in {REAL_FMNIST_DIR} (apt install dataset-fashion-mnist)")
    from fmnist.training import resolve_config, train

    run_dir = tmp_path_factory.mktemp("real-run") / "run"
    config = resolve_config("fast", overrides={"subset": 12000, "epochs": 3, "seed": 0})
    train(config, run_dir, data=REAL_FMNIST_DIR)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a small seed_cnn trained on the learnable dataset (a second or two),
    for tests of code paths rather than accuracy. Its data folder is ``tiny_run.parent / 'data'``."""
    from fmnist.training import read_config_file, resolve_config, train

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_learnable(root / "data")
    config_path = root / "small.toml"
    config_path.write_text(SMALL_MODEL_TOML)
    config = resolve_config(file_values=read_config_file(config_path), overrides={"seed": 0})
    train(config, root / "run", data=data)
    return root / "run"

"""Fixtures of the tuning tests: a training split on its own (no test files to read) and a
small search-space file."""

from __future__ import annotations

from pathlib import Path

import pytest

SPACE = """\
recipe: fast
base:
  epochs: {epochs}
  threads: 1
  model_args: {{width_14: 8, width_7: 16}}
space:
  lr: {{low: 0.02, high: 0.5, log: true}}
  batch_size: {{choices: [64, 256]}}
"""


@pytest.fixture
def train_only_dir(tmp_path: Path, learnable_writer) -> Path:
    """2,000 training images of the learnable dataset and no test split: anything that
    tried to read test images from this folder would fail."""
    folder = learnable_writer(tmp_path / "learnable", train=2000)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).rename(tmp_path / name)  # kept aside for the evaluation of a trial
    return folder


@pytest.fixture
def with_test_split(tmp_path: Path, train_only_dir: Path) -> Path:
    """A second folder with both splits, for evaluating a trial afterwards."""
    folder = tmp_path / "with-test"
    folder.mkdir()
    for path in train_only_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes((tmp_path / name).read_bytes())
    return folder


@pytest.fixture
def write_space(tmp_path: Path):
    def write(epochs: int = 2, name: str = "space.yaml", text: str | None = None) -> Path:
        path = tmp_path / name
        path.write_text(text if text is not None else SPACE.format(epochs=epochs))
        return path

    return write

"""Files fmnist writes get the permissions a plain open() would give them (0o666 less the
umask): safetensors' save_file recreates its file with mode 0600, which used to make model
files and checkpoints unreadable to other accounts and to a non-root container."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fmnist.cli import main
from fmnist.files import atomic_write_text
from fmnist.tensorfile import save_tensor_file
from fmnist.training import read_config_file, resolve_config, train


@pytest.fixture
def umask() -> Iterator[callable]:
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    text, tensors = tmp_path / "a.json", tmp_path / "b.safetensors"
    atomic_write_text(text, "{}")
    save_tensor_file(tensors, {"w": torch.zeros(2)}, {"format": "test"})
    assert (_mode(text), _mode(tensors)) == (expected, expected)


@pytest.mark.slow  # a training run, evaluation and report: ~10 s each
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_a_run_folder_follows_the_umask(tmp_path: Path, learnable_dir: Path, small_config: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    run = tmp_path / "run"
    config = resolve_config("seed", file_values=read_config_file(small_config), overrides={"epochs": 1})
    train(config, run, data=learnable_dir)
    assert main(["evaluate", str(run), "--data", str(learnable_dir)]) == 0
    names = [
        "model.safetensors", "checkpoints/last.safetensors", "test_predictions.npz",
        "metrics.json", "report.html", "config.json", "run.json", "epochs.jsonl",
    ]
    figures = sorted((run / "figures").glob("*.png"))
    assert figures
    modes = {name: oct(_mode(run / name)) for name in names} | {f.name: oct(_mode(f)) for f in figures}
    assert set(modes.values()) == {oct(expected)}, modes

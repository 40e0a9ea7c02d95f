"""What an output path may be: a regular file (replaced atomically) or a new one; a symlink
is written through; a folder, FIFO or device is refused in one line before any work, and a
folder that cannot be written names the folder. Also the outputs that must not land on
inputs: `explain` overlays, an `ensemble` folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.errors import ConfigError
from fmnist.files import atomic_write_text, same_file, writable_target


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path


def test_a_symlink_is_written_through_and_kept(tmp_path: Path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "loop"])
def test_targets_that_are_not_files_are_refused(tmp_path: Path, kind: str):
    target = tmp_path / "out.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    elif kind == "device":
        target = Path("/dev/null")
    else:
        target.symlink_to(tmp_path / "other.json")
        (tmp_path / "other.json").symlink_to(target)
    with pytest.raises(ConfigError):
        writable_target(target)
    with pytest.raises(ConfigError):
        atomic_write_text(target, "x")
    if kind == "device":
        assert Path("/dev/null").is_char_device()  # still the device
    if kind == "fifo":
        assert target.is_fifo()


def test_a_parent_that_is_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        atomic_write_text(tmp_path / "file" / "out.json", "x")


def test_same_file_survives_symlink_loops(tmp_path: Path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert same_file(tmp_path / "a", tmp_path / "a")
    assert not same_file(tmp_path / "a", tmp_path / "c")


def test_predict_refuses_a_folder_or_fifo_out_before_predicting(tiny_run: Path, tmp_path: Path, photo: Path, run_fmnist):
    run_fmnist("predict", str(tiny_run), str(photo), "--out", str(tmp_path)).error_line("is a folder")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    run_fmnist("predict", str(tiny_run), str(photo), "--out", str(fifo)).error_line("is a FIFO")
    assert fifo.is_fifo()


def test_explain_never_writes_an_overlay_over_an_input(tiny_run: Path, tmp_path: Path, photo: Path, run_fmnist):
    other = tmp_path / "x-occlusion.png"
    shutil.copy(photo, other)
    before = other.read_bytes()
    done = run_fmnist("explain", str(tiny_run), str(photo), str(other), "--method", "occlusion", "--out", str(tmp_path))
    done.error_line("would overwrite", "x-occlusion.png")
    assert other.read_bytes() == before
    (tmp_path / "afile").write_text("x")
    run_fmnist("explain", str(tiny_run), str(photo), "--out", str(tmp_path / "afile")).error_line("is a file")


def test_ensemble_out_is_never_a_members_or_a_runs_folder(tiny_run: Path, tmp_path: Path, run_fmnist):
    first, second = shutil.copytree(tiny_run, tmp_path / "one"), shutil.copytree(tiny_run, tmp_path / "two")
    metrics = (first / "metrics.json").read_bytes() if (first / "metrics.json").exists() else None
    data = str(tiny_run.parent / "data")
    run_fmnist("ensemble", str(first), str(second), "--out", str(first), "--data", data).error_line("member")
    run_fmnist("ensemble", str(first), str(first), "--out", str(tiny_run), "--data", data).error_line("trained run")
    (tmp_path / "file").write_text("x")
    run_fmnist("ensemble", str(first), str(second), "--out", str(tmp_path / "file"), "--data", data).error_line("is a file")
    if metrics is not None:
        assert (first / "metrics.json").read_bytes() == metrics


def test_calibrate_bins_are_bounded_and_honoured_in_text(tiny_run: Path, tmp_path: Path, run_fmnist):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    data = str(tiny_run.parent / "data")
    run_fmnist("calibrate", str(run), "--bins", "1000000000", "--data", data).error_line("between 1 and 1000")
    two = run_fmnist("calibrate", str(run), "--bins", "2", "--data", data)
    fifteen = run_fmnist("calibrate", str(run), "--data", data)
    assert two.returncode == fifteen.returncode == 0, two.stderr
    import json

    assert json.loads((run / "calibration.json").read_text())["bins"] == 15
    assert two.stdout != fifteen.stdout or "ECE 0.00%" in two.stdout  # the bins reach the printed ECE


def test_train_out_under_a_file_is_one_line(tmp_path: Path, learnable_dir: Path, run_fmnist):
    (tmp_path / "photo.png").write_bytes(b"x")
    run_fmnist("train", "--data", str(learnable_dir), "--epochs", "1", "--out", str(tmp_path / "photo.png" / "run")).error_line(
        "is a file, not a folder"
    )

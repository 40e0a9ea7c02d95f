"""`fmnist predict` refuses inputs that would hang or cannot be read, one line each, and
still predicts the good ones. Every run is a subprocess with a timeout (a FIFO opened for
reading blocks until a writer comes: a regression must fail, not hang the suite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from limited_process import permissions_apply, run_fmnist_limited, run_limited
from PIL import Image


@pytest.fixture
def good_png(tmp_path: Path) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    path = folder / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fmnist: error: ")]


def test_fifos_and_devices_are_refused_one_line_each(tiny_run, tmp_path, good_png):
    # Regression: a FIFO passed as an image blocked `predict` forever.
    fifo_png, fifo_csv, fifo_in_folder = tmp_path / "pipe.png", tmp_path / "rows.csv", good_png.parent / "pipe.png"
    for fifo in (fifo_png, fifo_csv, fifo_in_folder):
        os.mkfifo(fifo)

    done = run_fmnist_limited(
        "predict", str(tiny_run), str(fifo_png), "/dev/zero", str(good_png.parent), str(fifo_csv), "--format", "json",
        cwd=tmp_path, timeout=90,
    )  # fmt: skip

    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert [row["path"] for row in json.loads(done.stdout)] == [str(good_png)]
    errors = errors_of(done.stderr)
    assert len(errors) == 4, done.stderr
    for line, (path, kind) in zip(
        errors,
        [(fifo_png, "FIFO"), ("/dev/zero", "character device"), (fifo_in_folder, "FIFO"), (fifo_csv, "FIFO")],
    ):
        assert line.startswith(f"fmnist: error: {path}: not a regular file but a {kind}"), line


def test_unreadable_folders_are_reported_not_skipped(tiny_run, tmp_path, good_png, request):
    # Regression: an unreadable folder was silently skipped ("no images found", or the
    # good images only, exit 0), as Path.rglob ignores permission errors.
    if not permissions_apply(tmp_path):
        pytest.skip("this process cannot drop the power to read unreadable files (root without setpriv/CAP_SETPCAP)")
    locked = tmp_path / "locked"
    locked.mkdir()
    sub = good_png.parent / "private"
    sub.mkdir()
    for folder in (locked, sub):
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "hidden.png")
        folder.chmod(0)
        request.addfinalizer(lambda folder=folder: folder.chmod(0o755))

    done = run_fmnist_limited(
        "predict", str(tiny_run), str(locked), str(good_png.parent), "--format", "json",
        cwd=tmp_path, timeout=90, unprivileged=True,
    )  # fmt: skip

    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert [row["path"] for row in json.loads(done.stdout)] == [str(good_png)]
    errors = errors_of(done.stderr)
    assert [line.split(": ")[2] for line in errors] == [str(locked), str(sub)], done.stderr
    assert all("permission denied" in line for line in errors)


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_prepare_photo_refuses_special_files_without_blocking(tmp_path, target):
    path = str(tmp_path / "pipe.png") if target == "fifo" else target
    if target == "fifo":
        os.mkfifo(path)
    code = "import sys; from fmnist.inference.photo import prepare_photo; prepare_photo(sys.argv[1])"

    done = run_limited(["-c", code, path], cwd=tmp_path, timeout=30)

    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fmnist.errors.DataError: ") and "not a regular file" in last, done.stderr[-2000:]

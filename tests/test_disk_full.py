"""A full disk is one line, "no space left on MOUNT (... then --resume)", and the file
being replaced survives. The command-line cases write into a real, tiny tmpfs (mounting
needs root: elsewhere they are skipped, saying so); the mapping itself is also tested
without a mount."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist.errors import DiskFullError
from fmnist.files import atomic_path, atomic_write_bytes, atomic_write_text, is_no_space
from fmnist.tensorfile import load_tensor_file, save_tensor_file


class TinyFileSystem:
    """A tmpfs of a given size, mounted for one test."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.mount)], check=True, capture_output=True)

    def fill(self) -> None:
        """Leave no free block: write a filler file until the file system refuses."""
        try:
            with open(self.mount / f"filler-{uuid.uuid4().hex}", "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC

    def free_all(self) -> None:
        for filler in self.mount.glob("filler-*"):
            filler.unlink()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[TinyFileSystem]:
    mount = tmp_path / "tiny-fs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs can be mounted only as root (needed to fill a real file system)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield TinyFileSystem(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def test_no_space_errors_are_recognised() -> None:
    assert is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))
    assert not is_no_space(ValueError("no space"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_writer_failing_for_space_is_a_disk_full_error_and_the_old_file_stays(tmp_path: Path, code: int) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=r"no space left on /.* \(writing .*metrics\.json\)"), atomic_path(target) as tmp:
        tmp.write_text("new, half written")
        raise OSError(code, os.strerror(code))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_full_file_system_keeps_the_previous_file(tiny_fs: TinyFileSystem) -> None:
    target = tiny_fs.mount / "report.html"
    atomic_write_text(target, "previous report")
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(target, b"x" * (1 << 20))
    assert str(tiny_fs.mount) in str(caught.value) and "free space" in str(caught.value)
    assert target.read_text() == "previous report"
    assert sorted(p.name for p in tiny_fs.mount.iterdir()) == ["report.html"]


def test_a_tensor_file_on_a_full_file_system_is_a_disk_full_error(tiny_fs: TinyFileSystem) -> None:
    # safetensors reports the write error as a SafetensorError with the text only.
    target = tiny_fs.mount / "model.safetensors"
    save_tensor_file(target, {"w": torch.ones(4)}, {"format": "test"})
    with pytest.raises(DiskFullError, match="no space left on"):
        save_tensor_file(target, {"w": torch.ones(1 << 18)}, {"format": "test"})
    tensors, document = load_tensor_file(target)
    assert torch.equal(tensors["w"], torch.ones(4)) and document == {"format": "test"}
    assert sorted(p.name for p in tiny_fs.mount.iterdir()) == ["model.safetensors"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmnist", *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


def _one_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("fmnist: error:")]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow  # command-line runs in a subprocess: ~5 s each on an idle machine
def test_train_on_a_full_disk_says_free_space_then_resume(tiny_fs: TinyFileSystem, learnable_dir: Path, small_config: Path, tmp_path: Path) -> None:
    run = tiny_fs.mount / "run"
    # 256 kB hold the config and provenance, not the first checkpoint (~300 kB).
    done = _cli("train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(run), "--epochs", "2", "--no-eval", "--quiet", cwd=tmp_path)
    line = _one_line(done, f"no space left on {tiny_fs.mount}", f"free space, then fmnist train --resume {run}")
    assert "last.safetensors" in line
    assert not list(run.rglob("*.tmp"))
    tiny_fs.resize("16m")  # the user frees space, then follows the message
    resumed = _cli("train", "--resume", str(run), "--data", str(learnable_dir), "--no-eval", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len((run / "epochs.jsonl").read_text().splitlines()) == 2


def test_predict_out_on_a_full_disk(tiny_fs: TinyFileSystem, tiny_run: Path, tmp_path: Path) -> None:
    image = tmp_path / "shirt.png"
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(image)
    out = tiny_fs.mount / "predictions.json"
    out.write_text("[]\n")
    tiny_fs.fill()
    done = _cli("predict", str(tiny_run), str(image), "--out", str(out), cwd=tmp_path)
    _one_line(done, f"no space left on {tiny_fs.mount}", "predictions.json", "free space, then run the command again")
    assert json.loads(out.read_text()) == []  # the previous file, intact


@pytest.mark.slow  # command-line runs in a subprocess: ~5 s each on an idle machine
def test_export_on_a_full_disk(tiny_fs: TinyFileSystem, tiny_run: Path, tmp_path: Path) -> None:
    # torch.jit.save itself aborts the process on a full disk; the export must not use it on a file.
    out = tiny_fs.mount / "model.pt"
    tiny_fs.fill()
    done = _cli("export", str(tiny_run), "--format", "torchscript", "--out", str(out), "--data", str(tiny_run.parent / "data"), cwd=tmp_path)
    _one_line(done, f"no space left on {tiny_fs.mount}", "model.pt")
    assert not out.exists() and not list(tiny_fs.mount.glob(".*.tmp"))


@pytest.mark.slow  # command-line runs in a subprocess: ~5 s each on an idle machine
def test_evaluate_on_a_full_disk(tiny_fs: TinyFileSystem, tiny_run: Path, tmp_path: Path) -> None:
    run = tiny_fs.mount / "run"
    tiny_fs.resize("16m")
    shutil.copytree(tiny_run, run)
    metrics_before = (run / "metrics.json").read_bytes() if (run / "metrics.json").exists() else None
    tiny_fs.fill()
    done = _cli("evaluate", str(run), "--data", str(tiny_run.parent / "data"), cwd=tmp_path)
    _one_line(done, f"no space left on {tiny_fs.mount}")
    after = (run / "metrics.json").read_bytes() if (run / "metrics.json").exists() else None
    assert after == metrics_before
    assert not list(run.rglob(".*.tmp"))

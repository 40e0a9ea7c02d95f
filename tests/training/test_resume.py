"""kill -9 at any moment, then --resume: at most the current epoch is lost and the final
weights equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CONFIG = """
model = "seed_cnn"
epochs = 4
batch_size = 32
schedule = "onecycle"
ema_decay = 0.9
[model_args]
width = 8
hidden = 16
[augment]
flip = true
erase_probability = 0.5
"""


def _train_command(config: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fmnist", "train", "--config", str(config), "--data", str(data), "--out", str(out), "--threads", "1", "--no-eval", "--quiet"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "resume.toml"
    path.write_text(CONFIG)
    return path


def _kill_when(process: subprocess.Popen, condition, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "training ended before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _epochs_done(run: Path) -> int:
    log = run / "epochs.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


# One moment in the fast suite; the other two (and the ten-moment test) run with the slow tests.
@pytest.mark.parametrize(
    "kill_point",
    [
        "mid-epoch-2",
        pytest.param("before-first-checkpoint", marks=pytest.mark.slow),
        pytest.param("right-after-epoch-3", marks=pytest.mark.slow),
    ],
)
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path, learnable_dir: Path, config_file: Path, kill_point: str) -> None:
    reference = tmp_path / "reference"
    subprocess.run(_train_command(config_file, learnable_dir, reference), check=True, timeout=120)

    run = tmp_path / "interrupted"
    process = subprocess.Popen(_train_command(config_file, learnable_dir, run))
    if kill_point == "before-first-checkpoint":
        _kill_when(process, lambda: (run / "config.json").exists())
    elif kill_point == "mid-epoch-2":
        _kill_when(process, lambda: _epochs_done(run) >= 1)
        assert _epochs_done(run) <= 2
    else:
        _kill_when(process, lambda: _epochs_done(run) >= 3)
    assert not (run / "model.safetensors").exists()
    done_before = _epochs_done(run)

    resumed = subprocess.run(
        [sys.executable, "-m", "fmnist", "train", "--resume", str(run), "--data", str(learnable_dir), "--no-eval", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs_done(run) == 4 and done_before <= 4
    expected, actual = _weights(reference), _weights(run)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    # The per-epoch log was rebuilt from the checkpoint: no epoch twice.
    assert [line.split(",")[0] for line in (run / "epochs.jsonl").read_text().splitlines()] == [
        f'{{"epoch": {n}' for n in range(1, 5)
    ]


# -- kill -9 at ten moments, several inside the atomic writes of checkpoints and model ------

# Runs the CLI with the safetensors and text writers wrapped so the process SIGKILLs itself
# at a chosen point of a chosen write: before anything is written, half-way through the
# temporary file, or with the temporary file complete but not yet renamed. Nothing else
# changes, so the kill lands exactly where a real one could.
KILLING_CLI = r"""
import os, signal, sys
import fmnist.files, fmnist.tensorfile

kind, number, moment = os.environ["KILL_AT"].split(":")
number = int(number)
calls = {"tensors": 0, "text": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counted(which):
    calls[which] += 1
    return which == kind and calls[which] == number

real_save_file = fmnist.tensorfile.save_file
def save_file(tensors, filename, metadata=None):
    target = counted("tensors")
    if target and moment == "before":
        die()
    real_save_file(tensors, filename, metadata=metadata)
    if target and moment == "partial":
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        die()
    if target and moment == "written":
        die()
fmnist.tensorfile.save_file = save_file

real_write_bytes = fmnist.files.atomic_write_bytes
def atomic_write_bytes(path, data):
    target = counted("text")
    if target and moment == "written":
        with fmnist.files.atomic_path(path) as tmp:
            tmp.write_bytes(data)
            die()
    real_write_bytes(path, data)
    if target and moment == "after":
        die()
fmnist.files.atomic_write_bytes = atomic_write_bytes

from fmnist.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Writes of a 4-epoch run, in order: tensors 1-4 are the checkpoints after epochs 1-4, 5 is
# model.safetensors; text 1 is config.json, 2 run.json,
# 3 and 4 epochs.jsonl after epochs 1 and 2.
TEN_MOMENTS = [
    "time:started",  # config written, first epoch under way
    "tensors:1:before",  # inside the first checkpoint write, nothing written yet
    "tensors:2:partial",  # epoch 2's checkpoint half written
    "tensors:3:written",  # epoch 3's checkpoint complete, not yet renamed
    "text:4:written",  # epoch 2's log complete, not yet renamed (its checkpoint is)
    "time:mid-epoch-3",
    # The last checkpoint and epoch 4's log written, the model not yet. A kill timed by
    # polling the log raced the model write (a tiny model's takes milliseconds).
    "text:6:after",
    "tensors:4:partial",  # the last epoch's checkpoint half written
    "tensors:5:before",  # inside the write of model.safetensors
    "tensors:5:written",  # model.safetensors complete under its temporary name
]


@pytest.fixture(scope="module")
def ten_moments_setup(
    tmp_path_factory: pytest.TempPathFactory, learnable_writer: Callable[[Path], Path]
) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """The data, the config and the weights of the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("ten-moments")
    data = learnable_writer(root / "data")
    config = root / "resume.toml"
    config.write_text(CONFIG)
    subprocess.run(_train_command(config, data, root / "reference"), check=True, timeout=300)
    return data, config, _weights(root / "reference")


@pytest.mark.slow  # 21 training processes: about two minutes
@pytest.mark.parametrize("moment", TEN_MOMENTS)
def test_kill_at_ten_moments_then_resume_gives_identical_weights(
    tmp_path: Path, ten_moments_setup: tuple[Path, Path, dict[str, torch.Tensor]], moment: str
) -> None:
    data, config, expected = ten_moments_setup
    run = tmp_path / "run"
    arguments = _train_command(config, data, run)[3:]  # after "python -m fmnist"
    if moment.startswith("time:"):
        process = subprocess.Popen(_train_command(config, data, run))
        point = moment.removeprefix("time:")
        if point == "started":
            _kill_when(process, lambda: (run / "config.json").exists())
        else:  # mid-epoch-3
            _kill_when(process, lambda: _epochs_done(run) >= 2)
    else:
        killed = subprocess.run(
            [sys.executable, "-c", KILLING_CLI, *arguments], env={**os.environ, "KILL_AT": moment}, timeout=300, check=False
        )
        assert killed.returncode == -signal.SIGKILL, f"{moment}: the kill point was never reached"
    if moment != "tensors:5:written":
        assert not (run / "model.safetensors").exists()
    if moment == "text:6:after":  # the kill point is the one named
        assert _epochs_done(run) == 4

    resumed = subprocess.run(
        [sys.executable, "-m", "fmnist", "train", "--resume", str(run), "--data", str(data), "--no-eval", "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    actual = _weights(run)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), (moment, key)
    assert [json.loads(line)["epoch"] for line in (run / "epochs.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert not list(run.rglob(".*.tmp")), "the resume left the killed write's temporary file"

"""kill -9 at any moment, then --resume: at most the current epoch is lost and the final
weights equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.parametrize("kill_point", ["before-first-checkpoint", "mid-epoch-2", "right-after-epoch-3"])
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

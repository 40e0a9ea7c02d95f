"""Data-parallel training under torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _torchrun(*args: str) -> list[str]:
    return [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "fmnist", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
@pytest.mark.slow
def test_two_processes_train_one_run_folder_and_resume_exactly(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    common = ["--config", str(small_config), "--data", str(learnable_dir), "--threads", "1", "--quiet"]
    reference = tmp_path / "reference"
    done = subprocess.run(_torchrun("train", *common, "--out", str(reference)), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    # Rank 0 alone wrote the folder and evaluated: one report, one epoch log.
    assert done.stdout.count("test accuracy") == 1
    epochs = [json.loads(line) for line in (reference / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    # It learned, across both shards: well above chance (0.1) on the 40 validation
    # images, with the validation loss falling every epoch.
    assert epochs[-1]["val_accuracy"] >= 0.4
    assert epochs[0]["val_loss"] > epochs[1]["val_loss"] > epochs[2]["val_loss"]
    assert json.loads((reference / "run.json").read_text())["processes"] == 2
    assert (reference / "metrics.json").is_file()

    # Kill the distributed run after its first checkpoint, then resume it with torchrun.
    run = tmp_path / "interrupted"
    process = subprocess.Popen(_torchrun("train", *common, "--out", str(run), "--no-eval"), env=_env(), start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "epochs.jsonl").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "model.safetensors").exists()
    resumed = subprocess.run(
        _torchrun("train", "--resume", str(run), "--data", str(learnable_dir), "--no-eval", "--quiet"),
        env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(str(reference / "model.safetensors"))
    actual = load_file(str(run / "model.safetensors"))
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_a_checkpoint_from_two_processes_refuses_a_single_process_resume(tmp_path: Path, learnable_dir: Path, small_config: Path, run_fmnist) -> None:
    from fmnist.training import read_config_file, resolve_config, train
    from fmnist.training.checkpoint import load_training_state, save_training_state

    config = resolve_config(None, file_values=read_config_file(small_config), overrides={"epochs": 2})
    train(config, tmp_path / "run", data=learnable_dir)
    # Make it look interrupted after epoch 1 by a 2-process run whose rank-0 state is missing.
    checkpoint = tmp_path / "run" / "checkpoints" / "last.safetensors"
    state = load_training_state(checkpoint)
    state.rng = {key.replace("rank0.", "rank1."): value for key, value in state.rng.items()}
    state.epochs_done = 1
    save_training_state(checkpoint, state)
    (tmp_path / "run" / "model.safetensors").unlink()
    run_fmnist("train", "--resume", str(tmp_path / "run"), "--data", str(learnable_dir)).error_line("same number of processes")

"""What training does to the folder it is given: `train --out` never overwrites files that
are not its run's, a run folder is trained into by one process at a time (flock on
RUN/.lock, naming the holder's pid), and a resume clears the temporary files that a killed
atomic write left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fmnist.errors import RunError
from fmnist.training import (
    RunPaths,
    config_from_dict,
    read_config_file,
    resolve_config,
    resume,
    train,
)


def _config(small_config: Path, **overrides):
    return resolve_config("seed", file_values=read_config_file(small_config), overrides={"epochs": 2, **overrides})


def test_a_non_empty_folder_that_is_no_run_is_refused(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "config.json.bak").write_text("mine")
    (out / "report.html").write_text("my report")
    with pytest.raises(RunError, match="is not empty and holds no run"):
        train(_config(small_config), out, data=learnable_dir)
    assert (out / "report.html").read_text() == "my report"
    assert sorted(p.name for p in out.iterdir()) == ["config.json.bak", "report.html"]


def test_a_file_as_out_is_refused(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(RunError, match="is a file, not a folder"):
        train(_config(small_config), out, data=learnable_dir)
    assert out.read_text() == "mine"


def test_a_run_of_another_config_is_refused_with_resume_as_the_fix(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    out = tmp_path / "run"
    train(_config(small_config, epochs=1), out, data=learnable_dir)
    (out / "model.safetensors").unlink()  # even unfinished: it is not this config's run
    before = (out / "checkpoints" / "last.safetensors").read_bytes()
    with pytest.raises(RunError, match="another config \\(differs in epochs, lr\\)") as caught:
        train(_config(small_config, epochs=2, lr=0.01), out, data=learnable_dir)
    assert f"--resume {out}" in str(caught.value)
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == before


class _Interrupt(Exception):
    pass


def _stop_after_first_epoch(end) -> None:
    if end.record["epoch"] == 1:
        raise _Interrupt


def test_the_same_command_again_continues_an_interrupted_run_exactly(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    reference = tmp_path / "reference"
    train(_config(small_config), reference, data=learnable_dir)
    out = tmp_path / "run"
    with pytest.raises(_Interrupt):
        train(_config(small_config), out, data=learnable_dir, on_epoch=_stop_after_first_epoch)
    assert not (out / "model.safetensors").exists()
    result = train(_config(small_config), out, data=learnable_dir)  # same config: continued
    assert [record["epoch"] for record in result.history] == [1, 2]
    expected, actual = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_a_folder_left_with_only_a_lock_and_temporaries_is_reused(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    # What a kill before the config was written leaves behind.
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("12345\n")
    (out / ".config.json.0123abcd.tmp").write_text('{"half":')
    train(_config(small_config, epochs=1), out, data=learnable_dir)
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob(".*.tmp"))


def test_a_run_refused_before_it_wrote_anything_leaves_no_folder_or_lock(tmp_path: Path, small_config: Path) -> None:
    # A refusal while the data are read: the folders made for --out go again, and a
    # folder the user made stays as it was (empty, without a lock file).
    from fmnist.errors import DataError

    nested = tmp_path / "runs" / "today" / "first"
    with pytest.raises(DataError, match="no such file"):
        train(_config(small_config), nested, data=tmp_path / "missing")
    assert not (tmp_path / "runs").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(DataError):
        train(_config(small_config), mine, data=tmp_path / "missing")
    assert mine.is_dir() and list(mine.iterdir()) == []


HOLD_LOCK = """
import sys, time
from pathlib import Path
from fmnist.training.run_folder import RunPaths, locked
with locked(RunPaths(Path(sys.argv[1]))):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_frees_the_run(
    interrupted_run: Path, tiny_run: Path, run_fmnist
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(interrupted_run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        data = str(tiny_run.parent / "data")
        run_fmnist("train", "--resume", str(interrupted_run), "--data", data, "--no-eval").error_line(
            "in use by another fmnist process", f"(pid {holder.pid})"
        )
        same_config = config_from_dict(json.loads((interrupted_run / "config.json").read_text()))
        with pytest.raises(RunError, match=f"pid {holder.pid}"):
            train(same_config, interrupted_run, data=data)  # what the same command again would do
        with pytest.raises(RunError, match=f"pid {holder.pid}"):
            resume(interrupted_run, data=data)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The kernel released the lock with the killed process: no stale lock to clear by hand.
    resume(interrupted_run, data=tiny_run.parent / "data")
    assert (interrupted_run / "model.safetensors").is_file()
    assert (interrupted_run / ".lock").read_text().strip() == str(os.getpid())


def test_the_lock_is_released_when_training_fails(interrupted_run: Path) -> None:
    from fmnist.training.run_folder import locked

    paths = RunPaths(interrupted_run)
    with pytest.raises(ValueError), locked(paths):
        raise ValueError
    with locked(paths):  # acquirable again at once
        pass


def test_resume_removes_the_temporaries_of_killed_writes(interrupted_run: Path, tiny_run: Path) -> None:
    stale = [
        interrupted_run / "checkpoints" / ".last.safetensors.0a1b2c3d4e5f.tmp",
        interrupted_run / ".model.safetensors.ffeeddccbbaa.tmp",
        interrupted_run / ".epochs.jsonl.1234.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = interrupted_run / "notes.tmp"  # not a name atomic writes use: left alone
    mine.write_text("mine")
    resume(interrupted_run, data=tiny_run.parent / "data")
    assert not any(path.exists() for path in stale)
    assert mine.read_text() == "mine"

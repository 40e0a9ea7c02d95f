"""Two `fmnist tune` worker processes share one study on a real PostgreSQL server, which the
test starts itself (Debian's postgresql package: initdb into a temporary folder, pg_ctl on a
Unix socket only, createdb). One worker is killed with SIGKILL in the middle of a trial: its
heartbeat stops, the other worker marks that trial failed, runs it again and finishes the
study. Skipped where PostgreSQL's binaries (/usr/lib/postgresql/*/bin) are absent."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuning_workers import finished, fmnist_process

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg", reason="the tune-postgres extra (psycopg) is not installed")

pytestmark = pytest.mark.slow

WORKER_SPACE = """\
recipe: fast
base:
  epochs: 12
  threads: 1
  model_args: {width_14: 8, width_7: 16}
space:
  lr: {low: 0.02, high: 0.5, log: true}
  batch_size: {choices: [64, 128]}
"""


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/*/bin); apt-get install postgresql")
    return Path(found[-1]).parent


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user that
    Debian's package creates."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no postgres user to run the server as")
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own, listening on a Unix socket in a private folder (no
    TCP port), with a database ``fmnist``; stopped and removed afterwards."""
    bin_dir = postgres_bin()
    # Not under pytest's temporary folders: they are private to this user, and the server
    # runs as postgres when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="fmnist-postgres-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres")
    data, socket_dir, port = root / "data", root, "5432"

    def run(*command: str) -> None:
        done = subprocess.run(as_server_user(list(command)), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{command[0]} failed: {done.stdout}{done.stderr}"

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-c listen_addresses='' -k {socket_dir} -p {port} -c fsync=off", "start")
        run(str(bin_dir / "createdb"), "-h", str(socket_dir), "-p", port, "-U", "postgres", "fmnist")
        yield f"postgresql://postgres@/fmnist?host={socket_dir}&port={port}"
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def wait_for_first_epoch(study_dir: Path, process: subprocess.Popen, timeout: float) -> Path:
    """The worker's trial folder once it has logged an epoch (mid-trial), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the worker ended before a trial started: {process.communicate()[1]}")
        for log in study_dir.glob("trial-*/epochs.jsonl"):
            if log.read_text().strip():
                return log.parent
        time.sleep(0.05)
    raise AssertionError(f"no trial in {study_dir} logged an epoch within {timeout} s")


def test_two_workers_share_a_study_and_a_killed_workers_trial_is_failed_and_rerun(
    tmp_path: Path, postgres_url: str, train_only_dir: Path
):
    space = tmp_path / "shared.yaml"
    space.write_text(WORKER_SPACE)
    common = ["tune", str(space), "--storage", postgres_url, "--heartbeat", "1", "--pruner", "none",
              "--data", str(train_only_dir)]
    doomed = fmnist_process(*common, "--out", str(tmp_path / "machine-a"), "--trials", "3", cwd=tmp_path)
    survivor = fmnist_process(*common, "--out", str(tmp_path / "machine-b"), "--trials", "4", cwd=tmp_path)

    killed_folder = wait_for_first_epoch(tmp_path / "machine-a", doomed, timeout=240)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    killed_number = int(killed_folder.name.removeprefix("trial-"))
    result = finished(survivor, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = {trial.number: trial for trial in study.get_trials()}
    killed = trials[killed_number]
    assert killed.state == optuna.trial.TrialState.FAIL
    # Run again once, with the same settings, by the surviving worker.
    (retry,) = [trial for trial in trials.values() if trial.system_attrs.get("failed_trial") == killed_number]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == killed.params
    assert Path(retry.user_attrs["run"]).parent == tmp_path / "machine-b"
    survivors = [trial for trial in trials.values() if Path(trial.user_attrs["run"]).parent == tmp_path / "machine-b"]
    assert len(survivors) == 4 and all(trial.state == optuna.trial.TrialState.COMPLETE for trial in survivors)
    for trial in survivors:
        assert (Path(trial.user_attrs["run"]) / "model.safetensors").is_file()
    # The survivor's table shows the whole study, the killed trial and its retry included.
    assert f"{killed_number}  " in result.stdout and f"(retry of {killed_number})" in result.stdout
    assert (tmp_path / "machine-b" / "best.yaml").is_file()

"""The layout of a run folder and the provenance written into it."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import fmnist
from fmnist.cpus import available_cpus
from fmnist.errors import RunError
from fmnist.files import TEMPORARY_SUFFIX
from fmnist.training.checkpoint import CHECKPOINT_DIR, LAST

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RunPaths:
    """Where each artefact of a run lives; one run = one folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"  # the effective, fully resolved config

    @property
    def provenance(self) -> Path:
        return self.root / "run.json"  # versions, machine, data source, command

    @property
    def epochs_log(self) -> Path:
        return self.root / "epochs.jsonl"  # one JSON object per epoch

    @property
    def last_checkpoint(self) -> Path:
        return self.root / CHECKPOINT_DIR / LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.root / CHECKPOINT_DIR / "best.safetensors"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"  # final weights, self-describing

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"  # test-set evaluation

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"  # fitted temperature, ECE before and after

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE  # flock-ed by the process training into the folder

    def files(self) -> list[Path]:
        """The run's own files, which no command's --out may replace."""
        return [
            self.config, self.provenance, self.epochs_log, self.last_checkpoint, self.best_checkpoint,
            self.model, self.metrics, self.report, self.calibration,
        ]

    def writable_folders(self) -> list[Path]:
        """Where training and evaluation write (atomically, via temporary files)."""
        return [self.root, self.root / CHECKPOINT_DIR, self.figures]

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing but a lock file and the
        temporary files of interrupted writes (a run killed before its config was written)."""
        if not self.root.exists():
            return True
        return all(
            entry.name == LOCK_FILE or (entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX))
            for entry in self.root.iterdir()
        )


@contextlib.contextmanager
def locked(paths: RunPaths) -> Iterator[None]:
    """Hold the run folder's lock while training into it; a second process is refused
    with the holder's pid. flock is released by the kernel when the process ends, however
    it ends (kill -9 included), so a lock is never stale; the file itself stays."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunError(
                f"{paths.root} is in use by another fmnist process (pid {holder})",
                "wait for it to finish or stop it; two processes cannot train into one run folder",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def files_of_run_around(model: str | os.PathLike[str]) -> list[Path]:
    """The run files an output must not replace, for a model given as a run folder or
    as a model file: the file itself and, when it lies in a run folder, the run's files."""
    path = Path(model).expanduser()
    folder = path if path.is_dir() else path.parent
    protected = [path] if not path.is_dir() else []
    paths = RunPaths(folder)
    if paths.config.is_file() or paths.model.is_file():
        protected += paths.files()
    return protected


def default_run_dir(model: str, base: Path = Path("runs")) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = base / f"{stamp}-{model}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = base / f"{stamp}-{model}-{suffix}"
    return candidate


def _git(*args: str) -> subprocess.CompletedProcess | None:
    source = Path(fmnist.__file__).resolve().parent
    try:
        return subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision() -> str | None:
    """The git commit of the fmnist source, when it is a checkout (else None)."""
    result = _git("rev-parse", "HEAD")
    return result.stdout.strip() or None if result is not None and result.returncode == 0 else None


def git_dirty() -> bool | None:
    """Whether tracked files differ from that commit (the figures are then not of the
    commit alone); None outside a checkout."""
    result = _git("status", "--porcelain", "--untracked-files=no")
    return bool(result.stdout.strip()) if result is not None and result.returncode == 0 else None


def provenance(threads: int) -> dict:
    """Library versions, machine and command: what a reader needs to trust a figure."""
    return {
        "fmnist": fmnist.__version__,
        "git_revision": git_revision(),
        "git_dirty": git_dirty(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": available_cpus(),  # affinity mask and cgroup quota applied
        "torch_threads": threads,
        "command": sys.argv,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }

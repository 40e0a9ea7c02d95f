"""Training's side of the run folder: its lock, its default name and the provenance
written into it. The layout itself (``RunPaths``) and its readers are fmnist.run."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

import fmnist
from fmnist.cpus import available_cpus, cpu_description
from fmnist.errors import ConfigError, RunError
from fmnist.run import LOCK_FILE, RunPaths, files_of_run_around

__all__ = ["LOCK_FILE", "RunPaths", "default_run_dir", "files_of_run_around", "locked", "provenance"]


@contextlib.contextmanager
def locked(paths: RunPaths) -> Iterator[None]:
    """Hold the run folder's lock while training into it; a second process is refused
    with the holder's pid. flock is released by the kernel when the process ends, however
    it ends (kill -9 included), so a lock is never stale; the file itself stays, except
    where the run ended before writing anything (a refusal while the data or teachers were
    read, a first-epoch divergence): then the lock and a folder made for it go too, so a
    failed start leaves nothing behind."""
    made = _missing_folders(paths.root)  # what mkdir creates, deepest first
    lock_was_there = paths.lock.exists()
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a part of the path is a file
        raise ConfigError(f"{paths.root}: a part of this path is a file, not a folder", "choose another --out") from None
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
        try:
            yield
        finally:
            if not lock_was_there:
                _remove_if_only_the_lock(paths, made)
    finally:
        os.close(fd)  # releases the lock


def _missing_folders(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_only_the_lock(paths: RunPaths, made: list[Path]) -> None:
    """Still holding the lock: drop it, and the folders this run made for it, when nothing
    else was written. Anything else in the folder keeps both; rmdir never removes a
    folder that is not empty."""
    try:
        if [entry.name for entry in os.scandir(paths.root)] != [paths.lock.name]:
            return
        paths.lock.unlink()
        for folder in made:
            folder.rmdir()
    except OSError:  # another process wrote into one meanwhile: leave what is there
        pass


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
        "cpu": cpu_description(),  # model name and the speed-relevant flags (AVX-512 BF16, AMX)
        "cpu_count": os.cpu_count(),
        "cpus_available": available_cpus(),  # affinity mask and cgroup quota applied
        "torch_threads": threads,
        "command": sys.argv,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }

"""The layout of a run folder and the provenance written into it."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import fmnist
from fmnist.cpus import available_cpus
from fmnist.training.checkpoint import CHECKPOINT_DIR, LAST


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

"""Worker processes of the tuning tests (a module of its own: importing from ``conftest``
is ambiguous once several test folders have one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_result import CliResult


def fmnist_process(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m fmnist ARGS`` started in the background (stdout and stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist", *args],
        cwd=cwd,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen, timeout: float) -> CliResult:
    stdout, stderr = process.communicate(timeout=timeout)
    return CliResult(process.returncode, stdout, stderr)

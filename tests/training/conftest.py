"""Fixtures shared by the training tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def interrupted_run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run as a kill before its model file would leave it."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.safetensors").unlink()
    return run

"""A copy of a run's model file with another calibration temperature and test-time flip
setting, for tests that need both to reach the exported graph or the predictor (shared by
the predictor and export tests; a module of its own, since importing from ``conftest`` is
ambiguous once several test folders have one)."""

from __future__ import annotations

from pathlib import Path

from fmnist.models import load_model, save_model


def recalibrated(run: Path, folder: Path, *, temperature: float, tta_flip: bool) -> Path:
    loaded = load_model(run)
    loaded.card.temperature, loaded.card.tta_flip = temperature, tta_flip
    path = folder / "model.safetensors"
    save_model(path, loaded.module, loaded.card)
    return path

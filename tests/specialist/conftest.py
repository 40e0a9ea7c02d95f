"""A specialist run trained once per test session on top of tiny_run (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def specialist_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tops specialist (seed_cnn, 4 outputs) whose card names tiny_run as its base."""
    from fmnist.training import resolve_config, train

    overrides = {
        "model": "seed_cnn", "model_args": {"width": 8, "hidden": 16}, "batch_size": 32, "epochs": 3,
        "specialist": "tops", "base_run": str(tiny_run), "seed": 0, "threads": 1,
    }
    run = tmp_path_factory.mktemp("specialist") / "run"
    train(resolve_config("seed", overrides=overrides), run, data=tiny_run.parent / "data")
    return run

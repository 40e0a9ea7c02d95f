"""`fmnist ensemble`: averaged probabilities, evaluated like one model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmnist.errors import RunError
from fmnist.evaluation import evaluate_ensemble, evaluate_run
from fmnist.training import read_config_file, resolve_config, train


@pytest.fixture
def two_runs(tmp_path: Path, learnable_dir: Path, small_config: Path) -> list[Path]:
    runs = []
    for seed in (1, 2):
        config = resolve_config(None, file_values=read_config_file(small_config), overrides={"seed": seed, "epochs": 2})
        train(config, tmp_path / f"run{seed}", data=learnable_dir)
        runs.append(tmp_path / f"run{seed}")
    return runs


def test_ensemble_averages_member_probabilities(two_runs: list[Path], learnable_dir: Path) -> None:
    members = [evaluate_run(run, learnable_dir, write=False)[0] for run in two_runs]
    averaged, metrics = evaluate_ensemble(two_runs, learnable_dir)
    expected = (members[0].probabilities + members[1].probabilities) / 2
    np.testing.assert_allclose(averaged.probabilities, expected, atol=1e-6)
    assert metrics["test_accuracy"] == pytest.approx((expected.argmax(1) == averaged.labels).mean())
    assert metrics["cost"]["runs"] == 2 and metrics["cost"]["total_train_seconds"] > 0
    assert [m["test_accuracy"] for m in metrics["members"]] == [m.accuracy() for m in members]


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_ensemble_cli_writes_metrics_and_report(tmp_path: Path, two_runs: list[Path], learnable_dir: Path, run_fmnist) -> None:
    out = tmp_path / "ens"
    done = run_fmnist("ensemble", *map(str, two_runs), "--data", str(learnable_dir), "--out", str(out), "--tta")
    assert done.returncode == 0, done.stderr
    assert "ensemble of 2: test accuracy" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == 10 and metrics["tta_flip"] is True
    assert "Ensemble members" in (out / "report.html").read_text()


def test_ensemble_needs_two_runs(two_runs: list[Path], run_fmnist) -> None:
    with pytest.raises(RunError, match="at least two"):
        evaluate_ensemble(two_runs[:1])
    run_fmnist("ensemble", str(two_runs[0]), "missing-run").error_line("no such run folder")

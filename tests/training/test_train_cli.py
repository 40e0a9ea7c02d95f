"""`fmnist train` and `fmnist evaluate` from the command line: outputs and clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_train_then_evaluate_writes_metrics_and_report(tmp_path: Path, run_fmnist, learnable_dir: Path, small_config: Path) -> None:
    out = tmp_path / "run"
    done = run_fmnist("train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(out), "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout and "report:" in done.stdout
    # Temperature scaling is fitted on the validation split (10% of 400) before evaluating.
    assert "calibrated on 40 validation images" in done.stdout
    assert json.loads((out / "calibration.json").read_text())["val_images"] == 40
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy_ci95"][0] <= metrics["test_accuracy"] <= metrics["test_accuracy_ci95"][1] <= 1
    assert metrics["test_images"] == 100
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == 10 and all(len(row) == 10 for row in matrix)
    assert sum(map(sum, matrix)) == 100
    assert metrics["test_accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(10)) / 100)
    assert set(metrics["classification_report"]) >= {"Shirt", "Pullover", "macro avg"}
    for name in ("confusion_matrix", "learning_curves", "correct_predictions", "confident_mistakes", "augmentation"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = (out / "report.html").read_text()
    # Self-contained: every picture is embedded, nothing is fetched.
    assert html.count("<img") == html.count("data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html
    for heading in ("Test accuracy", "Training", "Confusions", "Most confused pairs", "Per class", "Galleries", "Configuration", "Provenance"):
        assert heading in html

    # Evaluate again on the same data given as a Kaggle CSV: same figures.
    csv_dir = tmp_path / "csv"
    assert run_fmnist("data", "export-csv", str(csv_dir), "--data", str(learnable_dir)).returncode == 0
    again = run_fmnist("evaluate", str(out), "--data", str(csv_dir / "fashion-mnist_test.csv"))
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--epochs", "0"], "--epochs: expected a number >= 1"),
        (["train", "--epochs", "many"], "--epochs: expected a whole number"),
        (["train", "--lr", "-0.1"], "--lr: expected a number > 0"),
        (["train", "--val-fraction", "1.5"], "--val-fraction: expected a fraction"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--flavour", "x"], "unrecognized arguments: --flavour"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["train", "--recipe", "nope"], "invalid choice: 'nope' (choose from 'seed', 'fast', 'best')"),
        (["train", "--config", "missing.yaml"], "no such config file"),
        (["train", "--resume", "missing-run"], "not a run folder"),
        (["train", "--resume", "x", "--epochs", "3"], "--epochs cannot be combined with --resume"),
        (["evaluate", "missing-run"], "no such run folder or model file"),
        (["frobnicate"], "invalid choice"),
        # An empty path (an unset shell variable) is refused, not read as "no value".
        (["train", "--init", ""], "--init is an empty path"),
        (["train", "--teacher", "runs/a", "--teacher", " "], "--teacher is an empty path"),
        (["train", "--out", ""], "--out is an empty path"),
        (["train", "--data", ""], "--data is an empty path"),
        (["evaluate", ""], "RUN_DIR_OR_EXPORT is an empty path"),
        (["compare", "runs/a", ""], "RUN is an empty path"),
        (["predict", "runs/a", "x.png", ""], "INPUT is an empty path"),
        (["export", "runs/a", "--format", "onnx", "--out", ""], "--out is an empty path"),
    ],
)
def test_bad_flags_are_one_line_errors(run_fmnist, args: list[str], fragment: str) -> None:
    run_fmnist(*args).error_line(fragment)


def test_subset_larger_than_the_data_is_refused(run_fmnist, learnable_dir: Path) -> None:
    run_fmnist("train", "--data", str(learnable_dir), "--subset", "5000").error_line("subset 5000 is larger")


def test_evaluating_an_unfinished_run_says_how_to_finish_it(tmp_path: Path, run_fmnist) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    run_fmnist("evaluate", str(tmp_path / "half")).error_line("fmnist train --resume")


def test_a_corrupt_model_file_is_refused(tmp_path: Path, run_fmnist) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 100)
    run_fmnist("evaluate", str(bad)).error_line("model.safetensors")

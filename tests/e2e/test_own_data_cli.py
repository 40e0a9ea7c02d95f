"""End to end on the user's own images, CPU only: a generated 3-class image folder through
`fmnist train` (1-2 epochs), `fmnist evaluate` and `fmnist predict`, all in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from own_data_files import SHAPES, write_image_folder


@pytest.mark.slow
def test_image_folder_train_evaluate_predict(tmp_path: Path, run_fmnist) -> None:
    data = write_image_folder(tmp_path / "shapes", per_class={"train": 100, "test": 20})
    run = tmp_path / "run"
    trained = run_fmnist("train", "--data", str(data), "--out", str(run), "--epochs", "2", "--batch-size", "32", "--quiet")
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == list(SHAPES) and metrics["test_images"] == 60
    assert metrics["data"]["format"] == "images"
    report = (run / "report.html").read_text()
    assert all(name in report for name in SHAPES)

    evaluated = run_fmnist("evaluate", str(run), "--data", str(data))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] > 0.6  # 33% is chance

    predicted = run_fmnist("predict", str(run), str(data / "test" / "square" / "000.png"), "--format", "json")
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count('"label": "square"') >= 1

    # Fashion-MNIST-named data is not this model's: one line, exit 2.
    fashion = tmp_path / "fashion"
    write_image_folder(fashion, classes=("Bag", "Coat", "Dress"), per_class={"test": 2})
    run_fmnist("evaluate", str(run), "--data", str(fashion)).error_line("the model predicts 3 classes (circle, cross, square)")

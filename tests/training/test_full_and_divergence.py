"""`fmnist train --full` and a diverging run, end to end through the CLI.

Regressions: `--full` (no validation split) ended in a TypeError traceback while writing
the report (its epochs have no validation loss); a loss that became NaN in the first
epoch claimed a checkpoint that did not exist and left a run folder that refused the
retry with a lower rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist.reports.run_report import render_report

FULL_HISTORY = [
    {"epoch": 1, "train_loss": 2.1, "train_accuracy": 0.3, "val_loss": None, "val_accuracy": None, "lr": 0.01,
     "seconds": 1.5, "images_per_second": 300.0, "best": True},
    {"epoch": 2, "train_loss": 1.7, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None, "lr": 0.001,
     "seconds": 1.2, "images_per_second": 320.0, "best": True},
]


def test_the_report_of_a_run_without_validation(tmp_path: Path):
    from fmnist.reports.plots import figure_png, plot_learning_curves

    (tmp_path / "epochs.jsonl").write_text("".join(json.dumps(record) + "\n" for record in FULL_HISTORY))
    metrics = {
        "test_accuracy": 0.5, "test_accuracy_ci95": [0.4, 0.6], "test_images": 100, "errors": 50,
        "most_confused": [], "classification_report": {"macro avg": {"precision": 0.5, "recall": 0.5,
        "f1-score": 0.5, "support": 100}}, "class_names": [],
    }
    pngs = {name: b"" for name in ("confusion_matrix.png", "confident_mistakes.png", "correct_predictions.png",
                                   "augmentation.png")}

    html = render_report(tmp_path, metrics, pngs)

    assert "no validation split" in html and "epoch 2" in html and "--full" in html
    assert figure_png(plot_learning_curves(FULL_HISTORY))[:8] == b"\x89PNG\r\n\x1a\n"


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.slow
def test_full_run_trains_evaluates_and_reports(tmp_path: Path, run_fmnist, learnable_dir: Path, small_config: Path):
    out = tmp_path / "full"

    done = run_fmnist("train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(out),
                      "--full", "--epochs", "2")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "trained 2 epochs" in done.stdout and "test accuracy" in done.stdout and "report:" in done.stdout
    assert "calibrated" not in done.stdout  # nothing held out to fit a temperature on
    history = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert [record["val_loss"] for record in history] == [None, None]
    config = json.loads((out / "config.json").read_text())
    assert config["full"] is True
    html = (out / "report.html").read_text()
    assert "no validation split" in html and "Test accuracy" in html
    assert (out / "figures" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "metrics.json").read_text())["test_images"] == 100

    again = run_fmnist("evaluate", str(out), "--data", str(learnable_dir))
    assert again.returncode == 0, again.stderr
    run_fmnist("calibrate", str(out), "--data", str(learnable_dir)).error_line("full")


def test_a_diverging_run_stops_in_one_line_and_leaves_nothing_half_written(
    tmp_path: Path, run_fmnist, learnable_dir: Path, small_config: Path
):
    out = tmp_path / "diverged"
    before = files_under(tmp_path)

    line = run_fmnist(
        "train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(out), "--lr", "1e30", "--quiet"
    ).error_line("loss became nan in epoch 1", "a lower learning rate (--lr, now 1e+30)")

    assert "checkpoint" not in line and "kept" not in line  # nothing was kept: none is claimed
    # No model, report, metrics, checkpoint, config, temporary file, lock or folder.
    left = [name for name in files_under(tmp_path) if name not in before]
    assert left == [], left


@pytest.mark.slow
def test_the_same_out_takes_the_retry_after_a_divergence(
    tmp_path: Path, run_fmnist, learnable_dir: Path, small_config: Path
):
    out = tmp_path / "diverged"
    args = ["train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(out), "--epochs", "1"]
    run_fmnist(*args, "--lr", "1e30", "--quiet").error_line("loss became nan")

    retried = run_fmnist(*args, "--no-eval")

    assert retried.returncode == 0, retried.stderr
    assert (out / "model.safetensors").is_file()

"""`fmnist analyze`: text and JSON output from one real run, and clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist.evaluation.interpretation import TOPS


def test_analyze_json_holds_every_view(tiny_run: Path, run_fmnist):
    data = tiny_run.parent / "data"
    done = run_fmnist("analyze", str(tiny_run), "--data", str(data), "--format", "json", "--min-count", "1",
                      "--top-losses", "4", "--neighbours", "3", "--neighbour-errors", "2", "--label-issues", "5")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["test_images"] == 100
    assert all(pair["count"] >= 1 for pair in document["most_confused"])
    assert [row["name"] for row in document["per_class_accuracy"]][:2] == ["T-shirt/top", "Trouser"]
    assert document["tops_confusion"]["classes"] == list(TOPS)
    assert len(document["top_losses"]) == min(4, document["errors"])
    for neighbours in document["nearest_training_images"].values():
        assert len(neighbours) == 3
    assert len(document["label_issues"]) <= 5


def test_analyze_text(tiny_run: Path, run_fmnist):
    done = run_fmnist("analyze", str(tiny_run), "--data", str(tiny_run.parent / "data"), "--neighbours", "0")
    assert done.returncode == 0, done.stderr
    for heading in ("most confused", "per-class accuracy (95% bootstrap CI)", "tops confusion", "top losses",
                    "likely label errors"):
        assert heading in done.stdout
    assert "nearest training images" not in done.stdout


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_analyze_refusals(tmp_path: Path, tiny_run: Path, run_fmnist):
    run_fmnist("analyze", str(tmp_path / "missing")).error_line("no such run folder")
    run_fmnist("analyze", str(tiny_run), "--min-count", "0").error_line("--min-count")
    run_fmnist("analyze", str(tiny_run), "--data", str(tmp_path / "nowhere")).error_line("no such file or folder")

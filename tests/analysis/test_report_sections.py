"""The report's analysis sections, on a real calibrated run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fmnist.evaluation import calibrate_run, evaluate_run
from fmnist.reports import write_run_report
from fmnist.reports.analysis_section import analysis_section


@pytest.fixture(scope="module")
def reported_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("reported") / "run"))
    calibrate_run(run)
    predictions, metrics = evaluate_run(run)
    return run, write_run_report(run, predictions, metrics).read_text()


def test_report_has_every_analysis_section(reported_run: tuple[Path, str]):
    run, html = reported_run
    for heading in ("Calibration", "Where the model errs", "Per-class accuracy", "The tops",
                    "Most confidently wrong", "Nearest training images", "Likely label errors"):
        assert f">{heading}" in html, heading
    assert "Grad-CAM" in html
    for name in ("reliability", "top_losses", "nearest_training_images", "label_issues", "confident_mistakes"):
        assert (run / "figures" / f"{name}.png").is_file(), name


def test_calibration_table_shows_the_stored_temperature(reported_run: tuple[Path, str]):
    run, html = reported_run
    from fmnist.models import load_model

    assert f"{load_model(run).card.temperature:.3f}" in html


def test_ensemble_predictions_get_no_saliency_or_neighbours(reported_run: tuple[Path, str]):
    run, _ = reported_run
    predictions, metrics = evaluate_run(run, write=False)
    section = analysis_section(run, predictions, {**metrics, "members": [{"model_file": "a"}, {"model_file": "b"}]})
    html = "".join(section.html)
    assert "Grad-CAM" not in html and "Nearest training images" not in html
    assert "Likely label errors" in html and "top_losses.png" in section.pngs

"""Calibration: ECE against a hand computation, temperature fits that recover a known T,
and `fmnist calibrate` storing T in the model file without touching the test split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.errors import RunError
from fmnist.evaluation import (
    calibrate_run,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)
from fmnist.evaluation.calibration import negative_log_likelihood, validation_split
from fmnist.evaluation.predictions import predict
from fmnist.models import load_model


def test_ece_matches_a_hand_computation():
    # Two bins of width 0.5. Bin (0.5, 1]: confidences 0.9, 0.8, 0.6 -> mean 0.7667, one of
    # three right -> gap 0.4333. Bin [0, 0.5]: confidence 0.4 (4 classes), right -> gap 0.6.
    probabilities = np.array(
        [[0.9, 0.1, 0, 0], [0.8, 0.2, 0, 0], [0.6, 0.4, 0, 0], [0.4, 0.2, 0.2, 0.2]], dtype=np.float64
    )
    labels = np.array([0, 1, 1, 0])
    expected = (3 * abs(1 / 3 - (0.9 + 0.8 + 0.6) / 3) + 1 * abs(1.0 - 0.4)) / 4
    assert expected_calibration_error(probabilities, labels, bins=2) == pytest.approx(expected)
    diagram = reliability_diagram(probabilities, labels, bins=2)
    assert diagram.counts == [1, 3]
    assert diagram.accuracy == pytest.approx([1.0, 1 / 3])


def test_ece_against_an_independent_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 10, size=500)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    total = 0.0
    for low, high in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.sum() * abs((predicted[inside] == labels[inside]).mean() - confidence[inside].mean())
    assert expected_calibration_error(probabilities, labels) == pytest.approx(total / 500)


def test_an_empty_bin_is_reported_as_none():
    diagram = reliability_diagram(np.array([[0.95, 0.05]]), np.array([0]), bins=4)
    assert diagram.counts == [0, 0, 0, 1]
    assert diagram.confidence[:3] == [None, None, None]


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_that_generated_the_labels(true_temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20000, 10)) * 4
    probabilities = torch.softmax(torch.as_tensor(logits) / true_temperature, dim=1).numpy()
    # One categorical draw per row by inverting the cumulative distribution.
    labels = (probabilities.cumsum(axis=1) < rng.random((len(probabilities), 1))).sum(axis=1).clip(0, 9)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert negative_log_likelihood(logits, labels, fitted) <= negative_log_likelihood(logits, labels, 1.0)


def test_fit_temperature_refuses_zero_images():
    with pytest.raises(ValueError, match="zero images"):
        fit_temperature(np.zeros((0, 10)), np.zeros(0, dtype=np.int64))


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny run (calibrating rewrites the model file)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_calibrate_run_stores_the_temperature_and_keeps_the_predicted_classes(run_copy: Path, tiny_run: Path):
    data = tiny_run.parent / "data"
    before = load_model(run_copy)
    assert before.card.temperature == 1.0
    test_images = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = np.zeros(50, dtype=np.int64)
    result = calibrate_run(run_copy)
    after = load_model(run_copy)
    assert after.card.temperature == pytest.approx(result.temperature)
    assert after.card.temperature != 1.0
    assert after.card.extra["calibration"]["val_images"] == result.val_images
    assert json.loads((run_copy / "calibration.json").read_text())["temperature"] == pytest.approx(result.temperature)
    # Validation NLL cannot get worse: T = 1 was one of the candidates.
    assert result.val_nll_after <= result.val_nll_before + 1e-9
    # The same validation split the run was trained with (config.json: 400 images, fraction 0.1).
    _images, val_labels = validation_split(run_copy, data)
    assert len(val_labels) == result.val_images == 40
    # Temperature scaling changes confidences, never the predicted class.
    p_before, p_after = predict(before, test_images, labels), predict(after, test_images, labels)
    assert np.array_equal(p_before.predicted, p_after.predicted)
    assert not np.allclose(p_before.confidence, p_after.confidence)
    # Weights untouched.
    for key, tensor in before.module.state_dict().items():
        assert torch.equal(tensor, after.module.state_dict()[key])


def test_calibrating_twice_gives_the_same_temperature(run_copy: Path):
    first = calibrate_run(run_copy).temperature
    assert calibrate_run(run_copy).temperature == pytest.approx(first)


def test_a_full_run_has_no_validation_split(run_copy: Path):
    config = json.loads((run_copy / "config.json").read_text())
    # As `fmnist train --full` writes it: no validation split, so nothing to stop on either.
    (run_copy / "config.json").write_text(json.dumps({**config, "full": True, "patience": 0}))
    with pytest.raises(RunError, match="no validation split"):
        calibrate_run(run_copy)


def test_cli_calibrate_prints_and_stores(run_copy: Path, run_fmnist):
    done = run_fmnist("calibrate", str(run_copy), "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert load_model(run_copy).card.temperature == pytest.approx(document["temperature"])


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_cli_calibrate_refusals(run_copy: Path, run_fmnist, tmp_path: Path, learnable_dir: Path):
    run_fmnist("calibrate", str(tmp_path / "missing")).error_line("no such run folder")
    (run_copy / "config.json").write_text("{not json")
    run_fmnist("calibrate", str(run_copy)).error_line("config.json")
    run_fmnist("calibrate", str(run_copy), "--bins", "0").error_line("--bins")


def test_cli_calibrate_refuses_data_other_than_the_runs(run_copy: Path, run_fmnist, learnable_dir: Path, data_files):
    other = learnable_dir.parent / "other"
    data_files.idx_split(other, data_files.tiny(400, seed=5), split="train")
    data_files.idx_split(other, data_files.tiny(100, seed=6), split="test")
    run_fmnist("calibrate", str(run_copy), "--data", str(other)).error_line("differs from the data the run was trained on")

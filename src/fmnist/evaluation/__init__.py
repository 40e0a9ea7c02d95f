"""Evaluation: predictions computed once, then metrics and views over them."""

from fmnist.evaluation.calibration import (
    CalibrationResult,
    calibrate_run,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)
from fmnist.evaluation.ensemble import evaluate_ensemble
from fmnist.evaluation.metrics_file import evaluate_run, metrics_document
from fmnist.evaluation.predictions import Predictions, bootstrap_ci, predict

__all__ = [
    "CalibrationResult",
    "Predictions",
    "bootstrap_ci",
    "calibrate_run",
    "evaluate_ensemble",
    "evaluate_run",
    "expected_calibration_error",
    "fit_temperature",
    "metrics_document",
    "predict",
    "reliability_diagram",
]

"""Evaluation: predictions computed once, then metrics and views over them."""

from fmnist.evaluation.calibration import (
    CalibrationResult,
    calibrate_run,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)
from fmnist.evaluation.compare import Comparison, compare_runs, mcnemar_test
from fmnist.evaluation.ensemble import evaluate_ensemble
from fmnist.evaluation.evaluate import evaluate_run, metrics_document
from fmnist.evaluation.explain import Explanation, explain
from fmnist.evaluation.interpretation import Interpretation
from fmnist.evaluation.predictions import Predictions, bootstrap_ci, predict

__all__ = [
    "CalibrationResult",
    "Comparison",
    "Explanation",
    "Interpretation",
    "Predictions",
    "bootstrap_ci",
    "calibrate_run",
    "compare_runs",
    "evaluate_ensemble",
    "evaluate_run",
    "expected_calibration_error",
    "explain",
    "fit_temperature",
    "mcnemar_test",
    "metrics_document",
    "predict",
    "reliability_diagram",
]

"""Evaluation: predictions computed once, then metrics and views over them."""

from fmnist.evaluation.ensemble import evaluate_ensemble
from fmnist.evaluation.metrics_file import evaluate_run, metrics_document
from fmnist.evaluation.predictions import Predictions, bootstrap_ci, predict

__all__ = ["Predictions", "bootstrap_ci", "evaluate_ensemble", "evaluate_run", "metrics_document", "predict"]

"""Ensembles: average the class probabilities of several runs, evaluate like one model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fmnist.data import load
from fmnist.errors import RunError
from fmnist.evaluation.evaluate import metrics_document, run_test_predictions
from fmnist.evaluation.predictions import Predictions
from fmnist.evaluation.results import Evaluation
from fmnist.models import resolve_model_path
from fmnist.run import Run

log = logging.getLogger(__name__)


def _train_seconds(model_file: Path) -> float | None:
    """Total training time recorded in the run folder of a model file; None for a model
    file outside a run, or a run whose epoch log is unreadable (said in a warning)."""
    if not Run.is_run(model_file.parent):
        return None
    try:
        history = Run(model_file.parent).history()
    except RunError as error:
        log.warning("ensemble: training time unknown (%s)", error)
        return None
    return sum(record.seconds for record in history) if history else None


def evaluate_ensemble(
    runs: list[str | os.PathLike[str]],
    data: str | os.PathLike[str] | None = None,
    *,
    tta_flip: bool | None = None,
) -> Evaluation:
    """Average the softmax outputs of ``runs`` on the test split; metrics like one model's.

    ``tta_flip`` None uses each member's own setting; True/False forces it for all.
    """
    if len(runs) < 2:
        raise RunError("an ensemble needs at least two runs", "pass two or more run folders or model files")
    model_files = [resolve_model_path(run) for run in runs]  # refuse a bad path before any work
    test = load("test", data)
    members, probabilities = [], []
    class_names: list[str] | None = None
    for model_file in model_files:
        # Each member's test predictions as `fmnist evaluate` makes them (a specialist run
        # combined with its base): those its evaluation stored when current, else made now.
        member = run_test_predictions(model_file, test=test, tta_flip=tta_flip)
        if class_names is not None and member.predictions.class_names != class_names:
            raise RunError(f"{model_file}: its classes differ from the other members'", "ensemble models of one dataset")
        class_names = member.predictions.class_names
        test.check_classes(class_names, model_file)
        probabilities.append(member.predictions.probabilities)
        members.append(
            {
                "model_file": str(model_file),
                "model": member.model,
                "test_accuracy": member.predictions.accuracy(),
                "train_seconds": _train_seconds(model_file),
            }
        )
    averaged = Predictions(
        probabilities=np.mean(probabilities, axis=0).astype(np.float32),
        labels=test.labels,
        images=test.images,
        class_names=list(class_names or []),
    )
    seconds = [m["train_seconds"] for m in members]
    document = metrics_document(
        averaged,
        extra={
            "model": f"ensemble of {len(members)}",
            "members": members,
            "cost": {
                "runs": len(members),
                "total_train_seconds": sum(seconds) if all(s is not None for s in seconds) else None,
            },
            "tta_flip": tta_flip,
            "data": test.describe(),
        },
    )
    return Evaluation(averaged, document)

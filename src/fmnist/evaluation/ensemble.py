"""Ensembles: average the class probabilities of several runs, evaluate like one model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fmnist.data import load
from fmnist.errors import RunError
from fmnist.evaluation.evaluate import metrics_document
from fmnist.evaluation.predictions import Predictions, predict
from fmnist.models import load_model, resolve_model_path


def _train_seconds(model_file: Path) -> float | None:
    """Total training time recorded in the run folder beside a model file, if any."""
    log = model_file.parent / "epochs.jsonl"
    try:
        return sum(json.loads(line)["seconds"] for line in log.read_text().splitlines() if line.strip())
    except (OSError, json.JSONDecodeError, KeyError):
        return None


def evaluate_ensemble(
    runs: list[str | os.PathLike[str]],
    data: str | os.PathLike[str] | None = None,
    *,
    tta_flip: bool | None = None,
) -> tuple[Predictions, dict]:
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
        model = load_model(model_file)
        if class_names is not None and model.card.class_names != class_names:
            raise RunError(f"{model.path}: its classes differ from the other members'", "ensemble models of one dataset")
        class_names = model.card.class_names
        member = predict(model, test.images, test.labels, tta_flip=tta_flip)
        probabilities.append(member.probabilities)
        members.append(
            {
                "model_file": str(model.path),
                "model": model.card.model,
                "test_accuracy": member.accuracy(),
                "train_seconds": _train_seconds(model.path),
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
            "data": {
                "root": str(test.source.root),
                "origin": test.source.origin,
                "format": test.files.format,
                "official": test.official,
            },
        },
    )
    return averaged, document

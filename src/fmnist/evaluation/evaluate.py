"""Evaluate a run on the test split and write its metrics.json."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from fmnist.data import load
from fmnist.evaluation.calibration import calibration_summary
from fmnist.evaluation.predictions import Predictions, predict
from fmnist.evaluation.specialist import (
    predict_with_specialist,
    specialist_effect,
    specialist_info,
)
from fmnist.files import atomic_write_json
from fmnist.models import load_model, resolve_model_path

BOOTSTRAP_RESAMPLES = 2000


def metrics_document(predictions: Predictions, *, extra: dict | None = None) -> dict:
    """The contents of metrics.json for a set of test predictions."""
    low, high = predictions.accuracy_ci(resamples=BOOTSTRAP_RESAMPLES)
    return {
        "test_accuracy": predictions.accuracy(),
        "test_accuracy_ci95": [low, high],
        "ci_method": f"percentile bootstrap over test images, {BOOTSTRAP_RESAMPLES} resamples, seed 0",
        "test_images": len(predictions.labels),
        "test_loss": float(predictions.losses.mean()),
        "errors": int((~predictions.correct).sum()),
        "class_names": predictions.class_names,
        "confusion_matrix": predictions.confusion_matrix().tolist(),
        "classification_report": predictions.classification_report(),
        "most_confused": [
            {"true": t, "predicted": p, "count": c} for t, p, c in predictions.most_confused(min_count=1)[:15]
        ],
        "evaluated": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **(extra or {}),
    }


def evaluate_run(
    run: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    write: bool = True,
    tta_flip: bool | None = None,
) -> tuple[Predictions, dict]:
    """Evaluate a run folder's (or model file's) model on a test split.

    ``data`` may point at the user's own test data in either format. With ``write``
    the metrics go to metrics.json in the run folder.
    """
    model = load_model(run)
    test = load("test", data)
    extra: dict = {}
    temperature = model.card.temperature
    if specialist_info(model) is not None:
        # A specialist is evaluated as it is used: refining its base run's predictions
        # (each model with its own temperature already), with the base alone for comparison.
        predictions, base = predict_with_specialist(model, test.images, test.labels, tta_flip=tta_flip)
        extra["specialist"] = specialist_effect(base, predictions, specialist_info(model)["classes"])
        temperature = 1.0
    else:
        predictions = predict(model, test.images, test.labels, tta_flip=tta_flip)
    document = metrics_document(
        predictions,
        extra={
            "model": model.card.model,
            "model_file": str(model.path),
            "tta_flip": model.card.tta_flip if tta_flip is None else tta_flip,
            "data": {
                "root": str(test.source.root),
                "origin": test.source.origin,
                "format": test.files.format,
                "official": test.official,
                "content_digest": test.content_digest,
            },
            # Before/after the stored temperature (fitted on validation; 1 = not calibrated).
            "calibration": calibration_summary(predictions.logits, predictions.labels, temperature),
            **extra,
        },
    )
    if write:
        run_dir = Path(run) if Path(run).is_dir() else resolve_model_path(run).parent
        atomic_write_json(run_dir / "metrics.json", document)
    return predictions, document

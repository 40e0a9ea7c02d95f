"""Evaluate a run on the test split: its metrics.json, and its test predictions stored for
the views that follow (compare, ensemble, analyze)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import NamedTuple

from fmnist.data import Split, load
from fmnist.errors import RunError
from fmnist.evaluation.calibration import calibration_summary
from fmnist.evaluation.predictions import Predictions, predict
from fmnist.evaluation.results import Evaluation
from fmnist.evaluation.specialist import (
    load_base,
    predict_with_specialist,
    specialist_effect,
    specialist_info,
)
from fmnist.models import LoadedModel, load_model, resolve_model_path
from fmnist.run import ModelFingerprint, Run, TestPredictions, arrays_digest

log = logging.getLogger(__name__)

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
    test: Split | None = None,
) -> Evaluation:
    """Evaluate a run folder's (or model file's) model on a test split.

    ``data`` may point at the user's own test data in either format (or pass the loaded
    ``test`` split). With ``write`` the metrics go to metrics.json in the run folder and
    the test probabilities to test_predictions.npz, which compare, ensemble and analyze
    read instead of predicting again.
    """
    model = load_model(run)
    test = test if test is not None else load("test", data)
    predictions, extra, temperature, model_files = _predict_test(model, test, tta_flip)
    document = metrics_document(
        predictions,
        extra={
            "model": model.card.model,
            "model_file": str(model.path),
            "tta_flip": model.card.tta_flip if tta_flip is None else tta_flip,
            "tta_shift": model.card.tta_shift and tta_flip is not False,
            "data": test.describe(),
            # Before/after the stored temperature (fitted on validation; 1 = not calibrated).
            "calibration": calibration_summary(predictions.logits, predictions.labels, temperature),
            **extra,
        },
    )
    if write:
        folder = Run.of_model(run)
        folder.write_test_predictions(
            TestPredictions(
                probabilities=predictions.probabilities,
                labels=predictions.labels,
                logits=predictions.logits,
                class_names=list(predictions.class_names),
                data_digest=arrays_digest(test.images, test.labels),
                models=[ModelFingerprint.of(path) for path in model_files],
                tta_flip=tta_flip,
                model=model.card.model,
            )
        )
        folder.write_metrics(document)
    return Evaluation(predictions, document)


def _predict_test(
    model: LoadedModel, test: Split, tta_flip: bool | None
) -> tuple[Predictions, dict, float, list[Path]]:
    """(predictions, extra metrics, the temperature of the logits, the model files the
    probabilities depend on) for ``model`` on ``test``."""
    info = specialist_info(model)
    if info is None:
        test.check_classes(model.card.class_names, model.path)
        predictions = predict(model, test.images, test.labels, tta_flip=tta_flip)
        return predictions, {}, model.card.temperature, [model.path]
    # A specialist is evaluated as it is used: refining its base run's predictions (each
    # model with its own temperature already), with the base alone for comparison.
    base = load_base(model)
    test.check_classes(base.card.class_names, base.path)
    predictions, base_predictions = predict_with_specialist(model, test.images, test.labels, base=base, tta_flip=tta_flip)
    extra = {"specialist": specialist_effect(base_predictions, predictions, info["classes"])}
    return predictions, extra, 1.0, [model.path, base.path]


class RunTestPredictions(NamedTuple):
    predictions: Predictions
    model: str  # the registry name of the run's model
    model_file: Path
    reused: bool  # read from the run's test_predictions.npz rather than predicted now


def run_test_predictions(
    run: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    test: Split | None = None,
    tta_flip: bool | None = None,
) -> RunTestPredictions:
    """A run's test predictions exactly as `fmnist evaluate` makes them (a specialist run
    through its combination with the base). Read from the run when its last evaluation
    stored them for these very test images and an unchanged model file; predicted again
    (and not stored) otherwise."""
    model_file = resolve_model_path(run)
    test = test if test is not None else load("test", data)
    stored = stored_test_predictions(model_file, test, tta_flip=tta_flip)
    if stored is not None:
        return stored
    model = load_model(model_file)
    predictions, _, _, _ = _predict_test(model, test, tta_flip)
    return RunTestPredictions(predictions, model.card.model, model_file, reused=False)


def stored_test_predictions(
    run: str | os.PathLike[str], test: Split, *, tta_flip: bool | None = None
) -> RunTestPredictions | None:
    """The test predictions a run's last evaluation stored, when they are what predicting
    ``test`` now would give (the same images in the same order, the same test-time
    augmentation, the model files unchanged); None otherwise. The model is not loaded."""
    model_file = resolve_model_path(run)
    stored = _stored_predictions(model_file, test, tta_flip)
    if stored is None:
        return None
    test.check_classes(stored.class_names, model_file)
    predictions = Predictions(
        probabilities=stored.probabilities,
        labels=test.labels,
        images=test.images,
        class_names=stored.class_names,
        logits=stored.logits,
    )
    return RunTestPredictions(predictions, stored.model, model_file, reused=True)


def _stored_predictions(model_file: Path, test: Split, tta_flip: bool | None) -> TestPredictions | None:
    try:
        stored = Run.create(model_file.parent).test_predictions()
    except RunError as error:  # a damaged file is ignored: the predictions are made again
        log.warning("%s; predicting the test set again", error)
        return None
    if stored is None or stored.models[0].path != str(model_file.resolve()):
        return None
    if not stored.is_current(arrays_digest(test.images, test.labels), tta_flip=tta_flip):
        return None
    return stored


EXPORT_SUFFIXES = (".onnx", ".pt")  # the files `fmnist export` writes (ONNX, TorchScript)


def evaluate_export(
    path: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, *, test: Split | None = None
) -> Evaluation:
    """Evaluate an exported model file (ONNX or TorchScript from `fmnist export`) on a test
    split like a run, through the predictor for its format: the same metrics document.
    Nothing is written (an exported file has no run folder)."""
    from fmnist.inference.predictor import load_predictor

    path = Path(path)
    predictor = load_predictor(path, backend="onnxruntime" if path.suffix.lower() == ".onnx" else "torch")
    test = test if test is not None else load("test", data)
    test.check_classes(predictor.class_names, path)
    predictions = predict(predictor, test.images, test.labels)
    document = metrics_document(
        predictions,
        extra={
            "model": predictor.name,
            "model_file": str(path),
            "backend": predictor.backend,
            "tta_flip": predictor.tta_flip,
            "tta_shift": predictor.tta_shift,
            "data": test.describe(),
            "calibration": calibration_summary(predictions.logits, predictions.labels, predictor.temperature),
        },
    )
    return Evaluation(predictions, document)

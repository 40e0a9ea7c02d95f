"""A base model refined by a specialist for a group of confusable classes, evaluated.

When the base model's top prediction falls in the specialist's group (e.g. the four
"tops"), the base's probabilities within the group are replaced by the group's total
base probability times the specialist's probabilities; elsewhere the base's stand. The
rows still sum to 1 and the base's belief that the image is *some* top is kept, so the
specialist only re-ranks within the group. The rule and the base run's loading live in
fmnist.inference.combined, which prediction and serving use too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

from fmnist.evaluation.predictions import Predictions, predict
from fmnist.inference.combined import combine_probabilities, load_base
from fmnist.models.saved import LoadedModel, load_model


def specialist_info(model: LoadedModel) -> dict | None:
    """The model card's specialist section (group, classes, base_run), or None for a main model."""
    return model.card.extra.get("specialist")


WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def choose_weight(base: np.ndarray, specialist: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> float:
    """The specialist's share (on a 0.1 grid) with the most correct validation images.
    Ties go to the smaller share: the specialist is consulted only as far as it strictly
    helps on validation. Validation data only: the test split must never be used."""
    correct = [
        int((combine_probabilities(base, specialist, classes, weight=w).argmax(1) == labels).sum())
        for w in WEIGHT_GRID
    ]
    best = max(correct)
    return float(min(w for w, c in zip(WEIGHT_GRID, correct) if c == best))


def predict_with_specialist(
    specialist: LoadedModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    base: LoadedModel | None = None,
    tta_flip: bool | None = None,
) -> tuple[Predictions, Predictions]:
    """(combined predictions, the base model's own predictions) for uint8 ``images``.

    Both are ordinary Predictions over the ten classes, so every view (confusion matrix,
    most confused, top losses) and a comparison of the two work as for any model.
    """
    base = base if base is not None else load_base(specialist)
    classes = specialist_info(specialist)["classes"]
    base_predictions = predict(base, images, labels, tta_flip=tta_flip)
    # The specialist's own labels (0..k-1) are not needed: only its probabilities are used,
    # uncalibrated (temperature 1): its share was fitted on those at the end of training,
    # before any temperature was, and the share is what scales its say in the combination.
    raw = LoadedModel(specialist.module, dataclasses.replace(specialist.card, temperature=1.0), specialist.path)
    specialist_probabilities = predict(raw, images, np.zeros(len(images), np.int64), tta_flip=tta_flip).probabilities
    weight = float(specialist_info(specialist).get("weight", 1.0))
    combined = Predictions(
        probabilities=combine_probabilities(base_predictions.probabilities, specialist_probabilities, classes, weight=weight),
        labels=base_predictions.labels,
        images=base_predictions.images,
        class_names=base_predictions.class_names,
    )
    # Log-probabilities stand in for logits (a softmax gives the combination back), so
    # views that need logits, such as calibration at temperature 1, work unchanged.
    combined.logits = np.log(np.clip(combined.probabilities, 1e-12, None)).astype(np.float32)
    return combined, base_predictions


def predict_run_with_specialist(
    run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, *, split: str = "test"
) -> tuple[Predictions, Predictions]:
    """(combined, base alone) predictions of a specialist run on a split (default: test)."""
    from fmnist.data import load

    dataset = load(split, data)
    return predict_with_specialist(load_model(run), dataset.images, dataset.labels)


def pair_errors(predictions: Predictions, first: str, second: str) -> int:
    """Errors between two classes in both directions (first taken for second, and back)."""
    matrix = predictions.confusion_matrix()
    a, b = predictions.class_names.index(first), predictions.class_names.index(second)
    return int(matrix[a, b] + matrix[b, a])


def specialist_effect(base: Predictions, combined: Predictions, classes: Sequence[int]) -> dict:
    """With/without figures on the same images: accuracy, errors between each pair of the
    group's classes, errors fixed and broken, and the exact McNemar p-value (a two-sided
    binomial test on the images that one of the two gets right and the other wrong)."""
    fixed = int((~base.correct & combined.correct).sum())
    broken = int((base.correct & ~combined.correct).sum())
    names = [base.class_names[i] for i in classes]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]

    def figures(predictions: Predictions) -> dict:
        return {
            "test_accuracy": predictions.accuracy(),
            "errors": int((~predictions.correct).sum()),
            "pair_errors": {f"{a} <-> {b}": pair_errors(predictions, a, b) for a, b in pairs},
        }

    return {
        "without_specialist": figures(base),
        "with_specialist": figures(combined),
        "routed_images": int(np.isin(base.predicted, classes).sum()),  # base top-1 in the group
        "fixed": fixed,
        "broken": broken,
        "mcnemar_p": float(binomtest(fixed, fixed + broken, 0.5).pvalue) if fixed + broken else 1.0,
        "test": "exact McNemar: two-sided binomial test of fixed vs broken, p = 0.5",
    }

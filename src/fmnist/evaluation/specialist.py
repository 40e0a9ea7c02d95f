"""A base model refined by a specialist for a group of confusable classes, evaluated.

When the base model's top prediction falls in the specialist's group (e.g. the four
"tops"), the base's probabilities within the group are replaced by the group's total
base probability times the specialist's probabilities; elsewhere the base's stand. The
rows still sum to 1 and the base's belief that the image is *some* top is kept, so the
specialist only re-ranks within the group. The rule and the base run's loading live in
fmnist.inference.combined, which prediction and serving use too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

from fmnist.evaluation.predictions import Predictions, predict
from fmnist.inference.combined import (  # noqa: F401 (the rule's names re-exported)
    WEIGHT_GRID,
    SpecialistPredictor,
    choose_weight,
    combine_probabilities,
    load_base,
    stand_in_logits,
)
from fmnist.models.saved import LoadedModel, load_model


def specialist_info(model: LoadedModel) -> dict | None:
    """The model card's specialist section (group, classes, base_run), or None for a main model."""
    return model.card.extra.get("specialist")


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
    predictor = SpecialistPredictor(specialist, base if base is not None else load_base(specialist))
    base_predictions = predict(predictor.base, images, labels, tta_flip=tta_flip)
    probabilities = predictor.combine(base_predictions.probabilities, images, tta_flip=tta_flip)
    combined = Predictions(
        probabilities=probabilities,
        labels=base_predictions.labels,
        images=base_predictions.images,
        class_names=base_predictions.class_names,
        # Views that need logits, such as calibration at temperature 1, work unchanged.
        logits=stand_in_logits(probabilities),
    )
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

"""Compare two models on the same test images: per-class accuracy deltas, the confusion
difference, McNemar's exact test on the paired predictions, and the images whose
prediction changed.

McNemar's test looks only at the discordant pairs: images that A gets right and B wrong
(b) and the reverse (c). Under the null hypothesis that both models have the same error
rate, each discordant image is equally likely to fall either way, so min(b, c) follows
Binomial(b + c, 1/2); the exact two-sided p-value is scipy's ``binomtest``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from fmnist.data import Split, load
from fmnist.errors import RunError
from fmnist.evaluation.evaluate import run_test_predictions
from fmnist.evaluation.predictions import Predictions
from fmnist.models import resolve_model_path


@dataclass(frozen=True)
class McNemarResult:
    only_a_correct: int  # images A gets right and B gets wrong
    only_b_correct: int  # images B gets right and A gets wrong
    p_value: float  # exact two-sided (binomial on the discordant pairs); 1.0 when there are none


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """McNemar's exact test on paired per-image correctness (boolean arrays of one length)."""
    from scipy.stats import binomtest

    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired results must have one shape, got {correct_a.shape} and {correct_b.shape}")
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((correct_b & ~correct_a).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    return McNemarResult(only_a_correct=only_a, only_b_correct=only_b, p_value=min(p_value, 1.0))


@dataclass(frozen=True)
class PairChange:
    """For one unordered pair of classes {x, y}: the x<->y errors B fixed and broke relative to A."""

    classes: tuple[str, str]
    errors_a: int  # images of x predicted y or of y predicted x, by A
    errors_b: int
    fixed: int  # A made such an error, B got the image right
    broken: int  # A got the image right, B made such an error


@dataclass
class Comparison:
    """Two sets of predictions on the same test images; every view returns data."""

    a: Predictions
    b: Predictions
    name_a: str = "A"
    name_b: str = "B"

    def __post_init__(self) -> None:
        if len(self.a.labels) != len(self.b.labels) or not np.array_equal(self.a.labels, self.b.labels):
            raise RunError(
                "the two prediction sets are not on the same test images (labels differ)",
                "compare runs evaluated on the same --data",
            )
        if self.a.class_names != self.b.class_names:
            raise RunError(
                f"the two models predict different classes ({len(self.a.class_names)} vs {len(self.b.class_names)})",
                "compare models of one dataset (a specialist is compared through its combined predictor)",
            )

    def __repr__(self) -> str:  # a summary, not the arrays
        from fmnist.reports.notebook import comparison_summary

        return comparison_summary(self)

    def _repr_html_(self) -> str:  # Jupyter
        from fmnist.reports.notebook import comparison_html

        return comparison_html(self)

    @property
    def class_names(self) -> list[str]:
        return self.a.class_names

    def per_class_deltas(self) -> list[dict]:
        """Per class: accuracy (recall) of A and of B, and B - A."""
        rows = []
        labels = self.a.labels
        for label, name in enumerate(self.class_names):
            mask = labels == label
            if not mask.any():
                continue
            accuracy_a = float(self.a.correct[mask].mean())
            accuracy_b = float(self.b.correct[mask].mean())
            rows.append(
                {"class": name, "accuracy_a": accuracy_a, "accuracy_b": accuracy_b, "delta": accuracy_b - accuracy_a,
                 "support": int(mask.sum())}
            )
        return rows

    def confusion_difference(self) -> np.ndarray:
        """B's confusion matrix minus A's (rows: true class); negative off-diagonal = fewer errors."""
        return self.b.confusion_matrix().astype(np.int64) - self.a.confusion_matrix().astype(np.int64)

    def mcnemar(self) -> McNemarResult:
        return mcnemar_test(self.a.correct, self.b.correct)

    def changed(self) -> np.ndarray:
        """Test indices whose predicted class differs between A and B."""
        return np.flatnonzero(self.a.predicted != self.b.predicted)

    def pair_change(self, first: str, second: str) -> PairChange:
        """The first<->second errors (both directions) of each model, and how many B fixed and broke."""
        x, y = self.class_names.index(first), self.class_names.index(second)
        labels = self.a.labels

        def pair_errors(predictions: Predictions) -> np.ndarray:
            predicted = predictions.predicted
            return ((labels == x) & (predicted == y)) | ((labels == y) & (predicted == x))

        errors_a, errors_b = pair_errors(self.a), pair_errors(self.b)
        return PairChange(
            classes=(first, second),
            errors_a=int(errors_a.sum()),
            errors_b=int(errors_b.sum()),
            fixed=int((errors_a & self.b.correct).sum()),
            broken=int((errors_b & self.a.correct).sum()),
        )

    def to_dict(self, *, pairs: tuple[tuple[str, str], ...] = (("Shirt", "Pullover"), ("Coat", "Shirt")),
                changed_limit: int = 100) -> dict:
        names = self.class_names
        changed = self.changed()
        mcnemar = self.mcnemar()
        return {
            "a": self.name_a,
            "b": self.name_b,
            "test_images": len(self.a.labels),
            "accuracy_a": self.a.accuracy(),
            "accuracy_b": self.b.accuracy(),
            "accuracy_delta": self.b.accuracy() - self.a.accuracy(),
            "mcnemar": {**asdict(mcnemar), "test": "exact two-sided McNemar (binomial on discordant pairs)"},
            "per_class": self.per_class_deltas(),
            "confusion_difference": {"class_names": names, "matrix": self.confusion_difference().tolist()},
            "pairs": [asdict(self.pair_change(*pair)) for pair in pairs if set(pair) <= set(names)],
            "changed_predictions": len(changed),
            "changed": [
                {
                    "index": int(i),
                    "true": names[self.a.labels[i]],
                    "predicted_a": names[self.a.predicted[i]],
                    "predicted_b": names[self.b.predicted[i]],
                }
                for i in changed[:changed_limit]
            ],
        }


def run_predictions(
    run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, *, test: Split | None = None
) -> Predictions:
    """A run's test predictions exactly as `fmnist evaluate` computes them (a run whose
    evaluation combines several models is compared through that combination): those its
    evaluation stored when the test images and the model are unchanged, else made now."""
    return run_test_predictions(run, data, test=test).predictions


def compare_runs(
    run_a: str | os.PathLike[str], run_b: str | os.PathLike[str], data: str | os.PathLike[str] | None = None
) -> Comparison:
    """Compare two runs on the same test split (each run's stored predictions when current)."""
    for run in (run_a, run_b):
        resolve_model_path(run)  # refuse a bad path before loading the data
    test = load("test", data)
    return Comparison(
        run_predictions(run_a, test=test), run_predictions(run_b, test=test), name_a=str(run_a), name_b=str(run_b)
    )

"""Predictions computed once, then cheap views over them (in the spirit of fastai's
ClassificationInterpretation): accuracy, confidence interval, confusion matrix,
classification report, most-confused pairs, top losses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from fmnist.inference.predictor import Predictor, TorchPredictor, check_images
from fmnist.models.saved import LoadedModel


@dataclass
class Predictions:
    probabilities: np.ndarray  # float32 (N, C), rows sum to 1
    labels: np.ndarray  # int64 (N,) true classes
    images: np.ndarray  # uint8 (N, 28, 28), kept for galleries
    class_names: list[str]
    logits: np.ndarray | None = None  # float32 (N, C) before the temperature; None for averaged ensembles

    def __post_init__(self) -> None:
        if len(self.probabilities) != len(self.labels) or len(self.labels) != len(self.images):
            raise ValueError("probabilities, labels and images must have the same length")

    def __repr__(self) -> str:  # a summary, not the arrays
        from fmnist.reports.notebook import predictions_summary

        return predictions_summary(self)

    def _repr_html_(self) -> str:  # Jupyter
        from fmnist.reports.notebook import predictions_html

        return predictions_html(self)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def losses(self) -> np.ndarray:
        """Per-image cross-entropy (nats)."""
        true_probability = self.probabilities[np.arange(len(self.labels)), self.labels]
        return -np.log(np.clip(true_probability, 1e-12, None))

    def accuracy(self) -> float:
        return float(self.correct.mean())

    def accuracy_ci(self, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        return bootstrap_ci(self.correct, confidence=confidence, resamples=resamples, seed=seed)

    def confusion_matrix(self) -> np.ndarray:
        """Counts (C, C); rows are true classes, columns predicted."""
        return confusion_matrix(self.labels, self.predicted, labels=list(range(len(self.class_names))))

    def classification_report(self) -> dict:
        """scikit-learn's per-class precision, recall, F1 and support, as a dict."""
        return classification_report(
            self.labels,
            self.predicted,
            labels=list(range(len(self.class_names))),
            target_names=self.class_names,
            output_dict=True,
            zero_division=0,
        )

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(true class, predicted class, count) for off-diagonal cells, largest first."""
        matrix = self.confusion_matrix()
        pairs = [
            (self.class_names[t], self.class_names[p], int(matrix[t, p]))
            for t in range(len(matrix))
            for p in range(len(matrix))
            if t != p and matrix[t, p] >= min_count
        ]
        return sorted(pairs, key=lambda pair: -pair[2])

    def top_losses(self, k: int = 25, *, wrong_only: bool = True) -> np.ndarray:
        """Indices of the k images with the highest loss (most confidently wrong first)."""
        candidates = np.flatnonzero(~self.correct) if wrong_only else np.arange(len(self.labels))
        order = np.argsort(-self.losses[candidates], kind="stable")
        return candidates[order[:k]]


def bootstrap_ci(
    values: np.ndarray, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(values))  # bound memory to ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        indices = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[indices].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def predict(
    model: Predictor | LoadedModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 1024,
    tta_flip: bool | None = None,
) -> Predictions:
    """Run a predictor (or a loaded model, through its TorchPredictor) over uint8 ``images``
    once; everything else is a view of the result. ``tta_flip`` None: the model's own."""
    predictor = TorchPredictor(model) if isinstance(model, LoadedModel) else model
    logits, probabilities = predictor.outputs(images, batch_size=batch_size, tta_flip=tta_flip)
    return Predictions(
        probabilities=probabilities,
        labels=np.asarray(labels, dtype=np.int64),
        images=check_images(images),
        class_names=list(predictor.class_names),
        logits=logits,
    )

"""Where a model errs: an Interpretation is built once from a model and the test split,
then offers views that return data (in the spirit of fastai's ClassificationInterpretation).

Built once: the test predictions (probabilities, labels, losses) and the test images'
penultimate-layer features (the input of the model's final Linear layer, captured with a
forward hook). The training split's features are computed on first use by
``nearest_training_images``. Nothing here feeds back into training or model choice: the
test predictions are the final measurement.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fmnist import extras
from fmnist.data import Split, load
from fmnist.data.classes import is_fashion
from fmnist.errors import RunError
from fmnist.evaluation.predictions import Predictions, bootstrap_ci, predict
from fmnist.inference.predictor import TorchPredictor
from fmnist.inference.tta import Views
from fmnist.models import LoadedModel, load_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The four upper-body garments the original analysis found most confusable.
TOPS = ("T-shirt/top", "Pullover", "Coat", "Shirt")


@dataclass(frozen=True)
class ClassAccuracy:
    name: str
    accuracy: float
    ci95: tuple[float, float]  # percentile bootstrap over the class's test images
    support: int


@dataclass(frozen=True)
class Neighbour:
    train_index: int  # index into the training split
    label: int
    similarity: float  # cosine similarity of penultimate-layer features


@dataclass(frozen=True)
class LabelIssue:
    index: int  # index into the test split
    given: int  # the label in the file
    predicted: int  # the model's top class
    confidence: float  # the model's probability of its top class
    given_probability: float  # the model's probability of the given label


def final_linear(module: nn.Module) -> nn.Linear:
    """The model's last nn.Linear (its classifier head); its input is the feature vector."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise RunError(f"model {type(module).__name__} has no Linear layer to take features from")
    return linears[-1]


class FeatureRecorder:
    """Records the input of the model's final Linear layer during forward passes.

    With a linear head, averaging the features of an image's test-time views (its mirror,
    its shifts) with the logits' weights gives exactly the features of the averaged logits,
    so one prediction pass yields both."""

    def __init__(self, module: nn.Module) -> None:
        self.batches: list[torch.Tensor] = []
        self._handle = final_linear(module).register_forward_hook(self._record)

    def _record(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        self.batches.append(inputs[0].detach().flatten(1).float().cpu())

    def features(self, *, tta_flip: bool, tta_shift: bool = False) -> np.ndarray:
        """float32 (N, D). The predictor runs each batch once per view (inference/tta.py),
        in the order of ``Views.offsets``."""
        if not self.batches:
            return np.zeros((0, 0), dtype=np.float32)
        views = Views(flip=tta_flip, shift=tta_flip and tta_shift)
        count, weights = len(views), views.weights()
        groups = [self.batches[start : start + count] for start in range(0, len(self.batches), count)]
        return torch.cat([sum(w * batch for w, batch in zip(weights, group)) for group in groups]).numpy()

    def remove(self) -> None:
        self._handle.remove()


def penultimate_features(
    module: nn.Module, images: np.ndarray, *, batch_size: int = 1024, tta_flip: bool = False, tta_shift: bool = False
) -> np.ndarray:
    """float32 (N, D): the input of the final Linear layer for uint8 images (N, 28, 28)
    (averaged over each image's test-time views with ``tta_flip``/``tta_shift``, as the
    logits are)."""
    recorder = FeatureRecorder(module)
    try:
        TorchPredictor.of_module(module, tta_flip=tta_flip, tta_shift=tta_shift).logits(images, batch_size=batch_size)
    finally:
        recorder.remove()
    return recorder.features(tta_flip=tta_flip, tta_shift=tta_shift)


def unit_rows(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def nearest_neighbours(query: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray, k: int) -> list[list[Neighbour]]:
    """For each row of ``query`` (Q, D), the k rows of ``pool`` (P, D) with the highest cosine
    similarity. ``pool`` must already have unit-length rows (see unit_rows)."""
    similarity = unit_rows(query) @ pool.T  # (Q, P)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return [
        [Neighbour(int(j), int(pool_labels[j]), float(similarity[row, j])) for j in order[row]]
        for row in range(len(query))
    ]


def per_class_accuracy(predictions: Predictions, *, resamples: int = 2000, seed: int = 0) -> list[ClassAccuracy]:
    """Recall of each class with a 95% percentile-bootstrap interval over its test images."""
    rows = []
    for label, name in enumerate(predictions.class_names):
        correct = predictions.correct[predictions.labels == label]
        rows.append(
            ClassAccuracy(
                name=name,
                accuracy=float(correct.mean()) if len(correct) else float("nan"),
                ci95=bootstrap_ci(correct, resamples=resamples, seed=seed),
                support=len(correct),
            )
        )
    return rows


def tops_confusion(predictions: Predictions) -> tuple[list[str], np.ndarray]:
    """The confusion matrix restricted to rows and columns of the four tops classes.

    Rows are the true class, columns the prediction; predictions outside the group are
    not counted (so a row may sum to less than its support). Empty for data other than
    Fashion-MNIST (the group is named by its classes)."""
    names = predictions.class_names
    indices = [names.index(name) for name in TOPS] if is_fashion(names) else []
    return [names[i] for i in indices], predictions.confusion_matrix()[np.ix_(indices, indices)]


def find_label_issues(predictions: Predictions) -> list[LabelIssue]:
    """Test images whose label the model contradicts, by confident learning (cleanlab's
    ``find_label_issues``), most suspicious first.

    Caveat: confident learning is meant for out-of-sample probabilities. The model never
    trained on the test images, so its test probabilities are out-of-sample, and the list
    means exactly "images the model confidently contradicts": candidates to look at, not
    proven label errors (the model's own confident mistakes are among them)."""
    extras.require("analysis", feature="finding likely label errors (cleanlab)")
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues

    ranked = cleanlab_find_label_issues(
        labels=predictions.labels,
        pred_probs=predictions.probabilities.astype(np.float64),
        return_indices_ranked_by="self_confidence",
        n_jobs=1,
    )
    probabilities = predictions.probabilities
    return [
        LabelIssue(
            index=int(i),
            given=int(predictions.labels[i]),
            predicted=int(predictions.predicted[i]),
            confidence=float(probabilities[i].max()),
            given_probability=float(probabilities[i, predictions.labels[i]]),
        )
        for i in np.asarray(ranked, dtype=np.int64)
    ]


@dataclass
class Interpretation:
    predictions: Predictions  # test predictions, computed once (or read from the run)
    model: LoadedModel
    train: Split | None = None  # loaded on first use of nearest_training_images
    data: str | os.PathLike[str] | None = None  # where the training split is loaded from
    # Search only the first N training images for neighbours (None: all). A forward pass
    # over all 60,000 costs seconds to a minute on a shared CPU; the report uses a pool.
    neighbour_pool: int | None = None
    _train_features: np.ndarray | None = field(default=None, repr=False)
    # float32 (N, D) penultimate-layer features of the test images: recorded in the pass
    # that predicts, or computed on first use when the predictions were read from the run.
    _features: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_run(
        cls, run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, *, neighbour_pool: int | None = None
    ) -> Interpretation:
        """Load a run's model and its predictions on the test split of ``data``: those its
        evaluation stored when current (see evaluate.stored_test_predictions), else made now."""
        from fmnist.evaluation.evaluate import stored_test_predictions

        model = load_model(run)
        if model.card.extra.get("specialist"):
            # A specialist's own outputs cover four classes; its effect is a comparison.
            raise RunError(
                f"{run}: a specialist run predicts only its group of classes",
                "analyze its base run, and see the specialist's effect with `fmnist compare BASE_RUN SPECIALIST_RUN`",
            )
        test = load("test", data)
        stored = stored_test_predictions(model.path, test)
        if stored is not None:
            return cls(predictions=stored.predictions, model=model, data=data, neighbour_pool=neighbour_pool)
        return cls.from_model(model, test, train=None, data=data, neighbour_pool=neighbour_pool)

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        test: Split,
        *,
        train: Split | None = None,
        data: str | os.PathLike[str] | None = None,
        neighbour_pool: int | None = None,
    ) -> Interpretation:
        """Predict once on ``test``, recording the features in the same pass."""
        test.check_classes(model.card.class_names, model.path)
        recorder = FeatureRecorder(model.module)
        try:
            predictions = predict(model, test.images, test.labels)
        finally:
            recorder.remove()
        return cls(
            predictions=predictions,
            _features=recorder.features(tta_flip=model.card.tta_flip, tta_shift=model.card.tta_shift),
            model=model,
            train=train,
            data=data,
            neighbour_pool=neighbour_pool,
        )

    @property
    def features(self) -> np.ndarray:
        """float32 (N, D) penultimate-layer features of the test images."""
        if self._features is None:
            self._features = penultimate_features(
                self.model.module, self.predictions.images, tta_flip=self.model.card.tta_flip, tta_shift=self.model.card.tta_shift
            )
        return self._features

    @property
    def class_names(self) -> list[str]:
        return self.predictions.class_names

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        return self.predictions.most_confused(min_count)

    def per_class_accuracy(self, *, resamples: int = 2000, seed: int = 0) -> list[ClassAccuracy]:
        return per_class_accuracy(self.predictions, resamples=resamples, seed=seed)

    def top_losses(self, k: int = 25) -> np.ndarray:
        """Test indices of the k most confidently wrong predictions."""
        return self.predictions.top_losses(k)

    def tops_confusion(self) -> tuple[list[str], np.ndarray]:
        return tops_confusion(self.predictions)

    def _training_features(self) -> tuple[Split, np.ndarray]:
        """The training split and its unit-length features, computed once."""
        if self.train is None:
            self.train = load("train", self.data)
        if self._train_features is None:
            pool = self.train.images[: self.neighbour_pool]
            # The same feature space as the test images' (flip-averaged when the model's are).
            features = penultimate_features(
                self.model.module, pool, tta_flip=self.model.card.tta_flip, tta_shift=self.model.card.tta_shift
            )
            self._train_features = unit_rows(features)
        return self.train, self._train_features

    def nearest_training_images(self, index: int, k: int = 5) -> list[Neighbour]:
        """The k training images closest to test image ``index`` in the model's feature
        space (cosine similarity): what the model thinks the image looks like."""
        if not 0 <= index < len(self.features):
            raise IndexError(f"test index {index} out of range 0..{len(self.features) - 1}")
        train, train_features = self._training_features()
        return nearest_neighbours(self.features[index : index + 1], train_features, train.labels, k)[0]

    def label_issues(self, *, limit: int | None = None) -> list[LabelIssue]:
        """Likely label errors in the test split, most suspicious first (see find_label_issues)."""
        return find_label_issues(self.predictions)[:limit]

    # Figures: matplotlib Figures built without pyplot (no global state, no display needed;
    # a notebook shows a returned Figure). The report draws with the same functions.
    # Imported on use: plotting sits downstream of evaluation (fmnist.reports).

    def plot_confusion_matrix(self) -> Figure:
        """The test confusion matrix as a heatmap (rows: true class), counts in the cells."""
        from fmnist.reports.plots import plot_confusion_matrix

        return plot_confusion_matrix(self.predictions.confusion_matrix(), self.class_names)

    def plot_top_losses(self, k: int = 16, *, saliency: bool = False, columns: int = 8) -> Figure:
        """The ``k`` most confidently wrong test images with index, true class, prediction and
        probability; ``saliency`` overlays Grad-CAM of the predicted class."""
        from fmnist.reports.plots import plot_top_losses

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        maps = None
        chosen = self.top_losses(k)
        if saliency and len(chosen):
            from fmnist.evaluation.explain import explain

            maps = explain(self.model, self.predictions.images[chosen]).maps
        return plot_top_losses(self.predictions, k, maps=maps, columns=columns)

    def plot_most_confused(self, min_count: int = 1, *, limit: int = 15) -> Figure:
        """Bars of the ``limit`` most frequent (true -> predicted) confusions of at least ``min_count``."""
        from fmnist.reports.plots import plot_most_confused

        return plot_most_confused(self.predictions, min_count=min_count, limit=limit)

    def plot_reliability(self, *, bins: int = 15) -> Figure:
        """Reliability diagram on the test set: raw (T = 1) and, when the model stores a
        fitted temperature, calibrated."""
        from fmnist.evaluation.calibration import calibration_summary
        from fmnist.reports.plots import plot_calibration

        summary = calibration_summary(
            self.predictions.logits, self.predictions.labels, self.model.card.temperature, bins=bins
        )
        return plot_calibration(summary)

    def __repr__(self) -> str:
        predictions = self.predictions
        low, high = predictions.accuracy_ci()
        pairs = self.most_confused(1)[:1]
        worst = f", most confused {pairs[0][0]} \u2192 {pairs[0][1]} ({pairs[0][2]})" if pairs else ""
        return (
            f"Interpretation({self.model.card.model} from {self.model.path.parent.name}/{self.model.path.name}: "
            f"{len(predictions.labels):,} test images, accuracy {predictions.accuracy():.2%} "
            f"(95% CI {low:.2%}\u2013{high:.2%}), {int((~predictions.correct).sum()):,} errors{worst})"
        )

    def _repr_html_(self) -> str:
        return self.predictions._repr_html_()

    def to_dict(
        self, *, min_count: int = 5, top_losses: int = 25, label_issues: int = 50, neighbours: int = 0,
        neighbour_errors: int = 8,
    ) -> dict:
        """Every view as plain data (for ``--format json`` and the report). ``neighbours``
        nearest training images are listed for the first ``neighbour_errors`` top losses;
        ``label_issues`` 0 skips the label-error search (and its keys), which needs cleanlab."""
        names = self.class_names
        tops_names, tops_matrix = self.tops_confusion()
        losses = self.predictions.losses
        top = self.top_losses(top_losses)
        document = {
            "test_images": len(self.predictions.labels),
            "accuracy": self.predictions.accuracy(),
            "errors": int((~self.predictions.correct).sum()),
            "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in self.most_confused(min_count)],
            "per_class_accuracy": [asdict(row) for row in self.per_class_accuracy()],
            "top_losses": [
                {
                    "index": int(i),
                    "true": names[self.predictions.labels[i]],
                    "predicted": names[self.predictions.predicted[i]],
                    "confidence": float(self.predictions.confidence[i]),
                    "loss": float(losses[i]),
                }
                for i in top
            ],
            "tops_confusion": {"classes": tops_names, "matrix": tops_matrix.tolist()},
        }
        if label_issues:
            issues = self.label_issues()
            document["label_issues_found"] = len(issues)
            document["label_issues"] = [
                {**asdict(issue), "given": names[issue.given], "predicted": names[issue.predicted]}
                for issue in issues[:label_issues]
            ]
        if neighbours:
            document["nearest_training_images"] = {
                str(int(i)): [
                    {**asdict(n), "label": names[n.label]} for n in self.nearest_training_images(int(i), neighbours)
                ]
                for i in top[:neighbour_errors]
            }
        return document

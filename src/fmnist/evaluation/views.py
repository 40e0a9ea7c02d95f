"""Test-time views compared side by side: the same model on the same images with no
augmentation, with its mirror, and with the mirror and one-pixel shifts.

Which views a run predicts with is a choice like any other setting, so it is made on the
run's validation split (rebuilt from its config, no test image involved); the test split
is offered for the final measurement only. Each view's cost is reported next to its
accuracy, because shift views multiply the inference time by five.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from fmnist.data import load
from fmnist.errors import ConfigError, RunError
from fmnist.evaluation.calibration import negative_log_likelihood, validation_split
from fmnist.evaluation.specialist import specialist_info
from fmnist.inference.predictor import TorchPredictor
from fmnist.models import load_model, resolve_model_path

# name -> (tta_flip, tta_shift); shift views come only with the mirror (inference/tta.py)
VIEWS = {"none": (False, False), "flip": (True, False), "flip+shift": (True, True)}
SPLITS = ("val", "test")


@dataclass(frozen=True)
class ViewResult:
    view: str  # a key of VIEWS
    split: str  # "val" or "test"
    images: int
    accuracy: float
    errors: int
    nll: float  # mean negative log-likelihood at the model's stored temperature
    seconds: float  # wall time of this view's predictions
    own: bool  # the view the run predicts with (its model card's tta_flip/tta_shift)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_views(text: str) -> tuple[str, ...]:
    """'none,flip' -> ('none', 'flip'); 'all' -> every view; unknown names are refused."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return tuple(VIEWS)
    unknown = [name for name in names if name not in VIEWS]
    if unknown or not names:
        raise ConfigError(
            f"unknown test-time view {', '.join(unknown) or repr(text)}",
            f"pass a comma-separated list of {', '.join(VIEWS)}, or all",
        )
    return tuple(dict.fromkeys(names))  # in the order given, each once


def evaluate_views(
    run: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    split: str = "val",
    views: tuple[str, ...] | None = None,
) -> list[ViewResult]:
    """Accuracy, NLL and time of ``run``'s model under each of ``views`` (default: all)
    on its validation split (``split="val"``) or the test split. Nothing is written.

    ``data`` is the run's training data for ``val`` (found from its provenance when
    omitted), test data for ``test``.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", "pass val (to choose) or test (to measure)")
    views = tuple(VIEWS) if views is None else views
    model_file = resolve_model_path(run)
    model = load_model(model_file)
    if specialist_info(model) is not None:
        raise RunError(
            f"{model_file}: a specialist refines its base run's predictions, so its views are the base's",
            "compare the views of its base run",
        )
    if split == "val":
        images, labels = validation_split(model_file.parent, data)
        if len(labels) == 0:
            raise RunError(f"{model_file.parent}: the validation split is empty", "train with a --val-fraction above 0")
    else:
        test = load("test", data)
        test.check_classes(model.card.class_names, model_file)
        images, labels = test.images, test.labels
    labels = np.asarray(labels, dtype=np.int64)
    predictor = TorchPredictor(model)
    own = (bool(model.card.tta_flip), bool(model.card.tta_shift))
    results = []
    for name in views:
        flip, shift = VIEWS[name]
        started = time.perf_counter()
        logits = predictor.logits(images, tta_flip=flip, tta_shift=shift)
        seconds = time.perf_counter() - started
        correct = logits.argmax(axis=1) == labels
        results.append(
            ViewResult(
                view=name,
                split=split,
                images=len(labels),
                accuracy=float(correct.mean()),
                errors=int((~correct).sum()),
                nll=negative_log_likelihood(logits, labels, model.card.temperature),
                seconds=seconds,
                own=(flip, shift) == own,
            )
        )
    return results

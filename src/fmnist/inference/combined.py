"""A specialist run at inference: its base run's probabilities, refined within the group.

A specialist's model has one output per class of its group (e.g. the four tops) and is
never meant to answer alone: on a blank image it would still name a top. Prediction,
serving and evaluation all use the combination below; what needs a single model (ONNX
or TorchScript export, saliency maps) refuses a specialist and names its base run.

The rule: when the base's top prediction is in the group, the base's probabilities within
the group are replaced by the group's total base probability times
``(1 - weight) x base's conditional + weight x specialist's``; elsewhere the base's stand.
Rows still sum to 1, and the base's belief that the image is *some* top is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmnist.errors import RunError
from fmnist.inference.predictor import Predictor, TorchPredictor, check_images
from fmnist.models.saved import LoadedModel, load_model, weights_digest

WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def combine_probabilities(
    base: np.ndarray, specialist: np.ndarray, classes: Sequence[int], *, weight: float = 1.0
) -> np.ndarray:
    """Base probabilities (N, C) refined by the specialist's (N, k) over ``classes`` (k labels).

    On the images whose base top-1 is in the group, the distribution within the group
    becomes ``(1 - weight) x base's + weight x specialist's`` (``weight`` 1: the
    specialist's alone), scaled by the base's total probability of the group.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    classes = np.asarray(classes)
    combined = base.copy()
    routed = np.isin(base.argmax(axis=1), classes)
    within = base[routed][:, classes]
    group_mass = within.sum(axis=1, keepdims=True)
    conditional = (1.0 - weight) * within / np.clip(group_mass, 1e-12, None) + weight * specialist[routed]
    combined[np.ix_(routed, classes)] = group_mass * conditional
    return combined


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


def base_run_path(specialist: LoadedModel) -> Path:
    """Where the specialist's card says its base run is: an absolute path as written, a
    relative one from the specialist's run folder (so the two can move together)."""
    stored = Path(specialist.card.specialist["base_run"]).expanduser()
    return stored if stored.is_absolute() else (specialist.path.parent / stored).resolve()


def describe_specialist(specialist: LoadedModel) -> str:
    info = specialist.card.specialist
    return (
        f"{specialist.path}: a specialist run: its model ranks only the {len(info['classes'])} classes of group "
        f"{info.get('group', '?')!r} and answers together with its base run {base_run_path(specialist)}"
    )


def refuse_specialist(model: LoadedModel, fix: str) -> None:
    """RunError (naming the base run) when ``model`` is a specialist, for a path that needs
    one model on its own; ``fix`` may use {base}."""
    if model.card.specialist is not None:
        raise RunError(describe_specialist(model), fix.format(base=base_run_path(model)))


def load_base(specialist: LoadedModel) -> LoadedModel:
    """The base run a specialist's card names, checked to be a main model whose classes
    at the specialist's labels are the specialist's classes."""
    info = specialist.card.specialist
    if info is None:
        raise RunError(f"{specialist.path}: not a specialist model", "pass a run trained with --specialist")
    base_run = base_run_path(specialist)
    if not base_run.exists():
        raise RunError(
            f"{specialist.path}: its base run {base_run} is missing",
            f"restore the base run folder at {base_run}, or retrain the specialist with --base RUN_DIR",
        )
    try:
        base = load_model(base_run)
    except RunError as error:
        raise RunError(f"{specialist.path}: its base run: {error.problem}", error.fix) from None
    if base.card.specialist is not None:
        raise RunError(f"{specialist.path}: its base run {base_run} is itself a specialist", "retrain the specialist with --base MAIN_RUN")
    classes = info["classes"]
    names = [base.card.class_names[i] if i < len(base.card.class_names) else None for i in classes]
    if names != specialist.card.class_names:
        raise RunError(
            f"{specialist.path}: its classes {specialist.card.class_names} are not its base run's {names} at labels {classes}",
            f"the base run at {base_run} was replaced; restore it, or retrain the specialist with --base RUN_DIR",
        )
    # The specialist's share was fitted against the base's answers at the end of its
    # training (and its validation images were the base's): another base, even one of the
    # same classes, makes the combination one nobody measured.
    recorded = info.get("base_weights")
    if recorded is not None and weights_digest(base.module) != recorded:
        raise RunError(
            f"{specialist.path}: its base run {base_run} was trained again or replaced since the specialist was fitted to it (other weights)",
            f"restore that base run, or retrain the specialist with --base {base_run}",
        )
    return base


class SpecialistPredictor(Predictor):
    """A specialist run combined with its base run: probabilities over the base's classes."""

    backend = "torch"

    def __init__(self, specialist: LoadedModel, base: LoadedModel, *, threads: int | None = None) -> None:
        info = specialist.card.specialist
        self.base = TorchPredictor(base, threads=threads)
        # The specialist's probabilities enter uncalibrated (temperature 1): its share was
        # fitted on those at the end of training, before any temperature was.
        raw = LoadedModel(specialist.module, dataclasses.replace(specialist.card, temperature=1.0), specialist.path)
        self.specialist = TorchPredictor(raw, threads=threads)
        self.classes = list(info["classes"])
        self.weight = float(info.get("weight", 1.0))
        self.source = specialist.path
        self.name = self.specialist.name
        self.class_names = list(self.base.class_names)
        self.temperature = self.base.temperature  # the base's; the specialist's is not used
        self.tta_flip = self.base.tta_flip

    def combine(self, base: np.ndarray, images: np.ndarray, *, batch_size: int = 1024, tta_flip: bool | None = None) -> np.ndarray:
        """The combined probabilities, given the base's probabilities ``base`` for ``images``."""
        specialist = self.specialist.probabilities(images, batch_size=batch_size, tta_flip=tta_flip)
        return combine_probabilities(base, specialist, self.classes, weight=self.weight).astype(np.float32)

    def outputs(
        self, images: np.ndarray, *, batch_size: int = 1024, tta_flip: bool | None = None, temperature: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log-probabilities, probabilities) of the combination: there are no logits of a
        combination; log-probabilities stand in (a softmax at temperature 1 gives the
        probabilities back). ``temperature`` rescales the base's logits."""
        images = check_images(images)
        base = self.base.probabilities(images, batch_size=batch_size, tta_flip=tta_flip, temperature=temperature)
        probabilities = self.combine(base, images, batch_size=batch_size, tta_flip=tta_flip)
        return stand_in_logits(probabilities), probabilities


def stand_in_logits(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities, standing in for the logits a combination does not have."""
    return np.log(np.clip(probabilities, 1e-12, None)).astype(np.float32)


def load_specialist_predictor(specialist: LoadedModel, *, threads: int | None = None) -> SpecialistPredictor:
    return SpecialistPredictor(specialist, load_base(specialist), threads=threads)

"""Specialists: second-stage models trained only on a group of easily confused classes.

A specialist run trains on the group's images with labels remapped to 0..k-1 (its model
has k outputs and stores the group's class names), and its model card names the base run
that consults it; inference/combined.py combines the two. ``SpecialistFeature`` is how a
run with ``specialist`` set does this (the hooks are described in training/hooks.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fmnist.data.classes import CLASS_NAMES, NUM_CLASSES, is_fashion
from fmnist.errors import ConfigError, RunError
from fmnist.run import Run, RunPaths
from fmnist.training.hooks import TrainingFeature
from fmnist.training.training_data import split_settings

if TYPE_CHECKING:
    from fmnist.models import ModelCard
    from fmnist.training.config import TrainConfig

log = logging.getLogger(__name__)

# The groups the base model confuses most (see docs/analysis.md): the four upper-body garments.
SPECIALIST_GROUPS: dict[str, tuple[str, ...]] = {
    "tops": ("T-shirt/top", "Pullover", "Coat", "Shirt"),
}


def group_classes(name: str) -> tuple[int, ...]:
    """The labels (indices into CLASS_NAMES) of specialist group ``name``, in label order."""
    if name not in SPECIALIST_GROUPS:
        raise ConfigError(f"unknown specialist group {name!r}", f"choose one of: {', '.join(SPECIALIST_GROUPS)}")
    return tuple(sorted(CLASS_NAMES.index(class_name) for class_name in SPECIALIST_GROUPS[name]))


def group_indices(labels: np.ndarray, indices: np.ndarray, name: str) -> np.ndarray:
    """The entries of ``indices`` whose image belongs to one of the group's classes."""
    return indices[np.isin(labels[indices], group_classes(name))]


def remap_to_group(labels: np.ndarray, name: str) -> np.ndarray:
    """Labels remapped to 0..k-1 in group order; -1 for images outside the group."""
    classes = np.asarray(group_classes(name))
    remap = np.full(len(CLASS_NAMES), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    return remap[labels]


def specialist_card(name: str, base_run: str | os.PathLike[str], *, run_dir: str | os.PathLike[str]) -> tuple[list[str], dict]:
    """(class names, the model card's ``extra['specialist']``) for a specialist of group
    ``name`` trained into ``run_dir``.

    The base run is stored relative to the specialist's run folder (e.g. "../base"), not
    as an absolute path: a model file must not carry the training machine's folders, and
    the two runs keep working when moved or copied together (inference.combined resolves it)."""
    classes = group_classes(name)
    relative = os.path.relpath(Path(base_run).expanduser().resolve(), Path(run_dir).expanduser().resolve())
    return [CLASS_NAMES[i] for i in classes], {"group": name, "classes": list(classes), "base_run": relative}


def fit_combination_weight(
    model: nn.Module, config: TrainConfig, val_images: torch.Tensor, val_labels: torch.Tensor
) -> tuple[float | None, str]:
    """(the specialist's share within the group (see inference/combined.py) that gets the
    most of the group's validation images right together with the base, the base's weights
    digest). The share is None without a validation split (``full``), where the
    specialist's probabilities are used alone. The digest goes into the card so that a base
    run trained again later is not silently combined with a share fitted on another model."""
    from fmnist.inference.combined import choose_weight
    from fmnist.inference.predictor import TorchPredictor
    from fmnist.models.saved import load_model, weights_digest

    base_model = load_model(config.base_run)
    base_weights = weights_digest(base_model.module)
    if not len(val_labels):
        return None, base_weights
    images = val_images.cpu().numpy()
    base = TorchPredictor(base_model).probabilities(images)
    model.eval()
    specialist = TorchPredictor.of_module(model, tta_flip=config.tta_flip).probabilities(images)
    classes = group_classes(config.specialist)
    labels = np.asarray(classes)[val_labels.cpu().numpy()]
    return choose_weight(base, specialist, labels, classes), base_weights


def check_base_run(base_run: str) -> None:
    """Refuse a specialist's base before training: it must be a finished ten-class run."""
    from fmnist.models.saved import resolve_model_path
    from fmnist.tensorfile import load_tensor_file

    try:
        _, document = load_tensor_file(resolve_model_path(base_run))
    except RunError as error:
        raise RunError(f"base_run: {error.problem}", error.fix) from None
    names = document.get("class_names", [])
    if len(names) != NUM_CLASSES:
        raise RunError(
            f"base_run {base_run}: not a ten-class model ({len(names)} classes)",
            "pass the main model's run folder, not a specialist's",
        )
    if not is_fashion(names):
        # The groups are named by Fashion-MNIST's classes (see SPECIALIST_GROUPS).
        raise RunError(
            f"base_run {base_run}: its classes are not Fashion-MNIST's ({', '.join(map(str, names[:4]))}, ...)",
            "specialists work on Fashion-MNIST runs only",
        )


def warn_if_split_differs(config: TrainConfig) -> None:
    """A specialist validates on the base's validation images of its group only when it
    splits the training data as the base did; otherwise some of its validation images
    were training images of the base (and of an ``init_run`` from it)."""
    if not RunPaths(Path(config.base_run)).config.is_file():
        return
    base = split_settings(Run(config.base_run).config_values())
    own = split_settings(config.to_dict())
    differing = [
        f"{name} {base[name]!r} (base) vs {own[name]!r}" for name in ("split_seed", "val_fraction", "subset") if base[name] != own[name]
    ]
    if differing:
        log.warning(
            "the specialist splits the data differently from its base run (%s): its validation "
            "figures may be optimistic; train it with the base run's seed (or split_seed), val_fraction and subset",
            "; ".join(differing),
        )


class SpecialistFeature(TrainingFeature):
    """A run on one group of classes (``specialist``) that refines ``base_run``."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self._weight: float | None = None
        self._base_weights: str | None = None  # set with the weight

    def resolve(self, config: TrainConfig) -> TrainConfig:
        # One output per class of the group (labels are remapped to 0..k-1).
        num_classes = len(group_classes(config.specialist))
        return dataclasses.replace(config, model_args={**config.model_args, "num_classes": num_classes})

    def check(self) -> None:
        classes = len(group_classes(self.config.specialist))
        if self.config.model_args.get("num_classes") != classes:
            raise ConfigError(f"model_args num_classes must be {classes} for specialist {self.config.specialist!r}")

    def preflight(self) -> None:
        check_base_run(self.config.base_run)
        warn_if_split_differs(self.config)

    def select_data(
        self, labels: np.ndarray, train_indices: np.ndarray, val_indices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Split first, then keep the group's images: with the base run's seed and
        # val_fraction the specialist validates on exactly the base's validation images of
        # the group, none of which the base (or an init_run from it) was trained on.
        name = self.config.specialist
        return remap_to_group(labels, name), group_indices(labels, train_indices, name), group_indices(labels, val_indices, name)

    def card(
        self, card: ModelCard, *, model: nn.Module, val_images: torch.Tensor, val_labels: torch.Tensor, folder: Path
    ) -> ModelCard:
        if self._base_weights is None:  # fitted once, however many files are written
            self._weight, self._base_weights = fit_combination_weight(model, self.config, val_images, val_labels)
        class_names, fields = specialist_card(self.config.specialist, self.config.base_run, run_dir=folder)
        fields["weight"] = 1.0 if self._weight is None else self._weight
        fields["weight_fitted_on"] = "validation" if self._weight is not None else None
        fields["base_weights"] = self._base_weights
        return dataclasses.replace(card, class_names=class_names, extra={**card.extra, "specialist": fields})

"""Specialists: second-stage models trained only on a group of easily confused classes.

A specialist run trains on the group's images with labels remapped to 0..k-1 (its model
has k outputs and stores the group's class names), and its model card names the base run
that consults it; evaluation/specialist.py combines the two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fmnist.data.classes import CLASS_NAMES
from fmnist.errors import ConfigError

if TYPE_CHECKING:
    from fmnist.training.config import TrainConfig

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


def start_name(start: str | os.PathLike[str]) -> str:
    """How a model card names the weights a run started from (--pretrained, --init): a
    named set as it is, a file or run folder by its name only (no machine path)."""
    return Path(start).name or str(start)


def fit_combination_weight(model: nn.Module, config: TrainConfig, val_images: torch.Tensor, val_labels: torch.Tensor) -> float | None:
    """The specialist's share within the group (see inference/combined.py) that gets the
    most of the group's validation images right together with the base; None without a
    validation split (--full), where the specialist's probabilities are used alone."""
    from fmnist.inference.combined import choose_weight
    from fmnist.inference.predictor import TorchPredictor
    from fmnist.models.saved import load_model

    if not len(val_labels):
        return None
    images = val_images.cpu().numpy()
    base = TorchPredictor(load_model(config.base_run)).probabilities(images)
    model.eval()
    specialist = TorchPredictor.of_module(model, tta_flip=config.tta_flip).probabilities(images)
    classes = group_classes(config.specialist)
    labels = np.asarray(classes)[val_labels.cpu().numpy()]
    return choose_weight(base, specialist, labels, classes)

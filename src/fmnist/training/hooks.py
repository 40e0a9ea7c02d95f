"""The hooks through which an optional capability (transfer learning, specialists) joins a run.

``train()`` knows no feature by name: it asks ``features.features_for(config)`` which ones the
config turns on and calls each at the steps below, in this order. Every hook does nothing by
default, so a feature overrides only the steps it changes.

    resolve     derived settings, while the config is resolved (e.g. a specialist's outputs)
    check       consistency rules across settings, after ``TrainConfig.validate``
    preflight   refuse missing or unusable inputs (files, runs) before any data is read
    select_data which training images and labels the run sees, after the train/val split
    initialise  starting weights of a fresh run (not on resume: it restores its own)
    prepare     work on the loaded data before the first step (fresh and resumed runs alike)
    loss        the training loss of a batch, in place of cross-entropy with the labels
    card        fields this feature adds to the model card of a file written into ``folder``
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from fmnist.models import ModelCard
    from fmnist.training.config import TrainConfig
    from fmnist.training.training_data import TrainingData


class TrainingFeature:
    """One optional capability of a run, built from the run's config; every hook a no-op."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def resolve(self, config: TrainConfig) -> TrainConfig:
        return config

    def check(self) -> None:
        """Raise ConfigError for settings that do not fit together for this feature."""

    def preflight(self) -> None:
        """Raise ConfigError or RunError for an input the run cannot use (read nothing big)."""

    def select_data(
        self, labels: np.ndarray, train_indices: np.ndarray, val_indices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, train indices, validation indices) the run trains and validates on."""
        return labels, train_indices, val_indices

    def initialise(self, model: nn.Module) -> None:
        """Set the starting weights of a fresh run's ``model`` (built, still on the CPU)."""

    def prepare(self, data: TrainingData) -> None:
        """Work on the run's data before the first step (e.g. a teacher's outputs)."""

    def provenance(self) -> dict:
        """Fields for run.json that name this feature's inputs as the run started (after
        ``prepare``); ``check_resumed`` compares them on a resume."""
        return {}

    def check_resumed(self, recorded: dict) -> None:
        """Raise RunError when an input recorded in run.json (``recorded``: the whole file)
        changed since the run started: the resumed run would not be the one it continues."""

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, *, batch: torch.Tensor, views: torch.Tensor
    ) -> torch.Tensor | None:
        """The loss of a training batch (``batch``: the images' indices in the training split,
        ``views``: each one's augmentation view, augment.augment_batch_with_views), or None
        to keep the default cross-entropy with the labels."""
        return None

    def card(
        self, card: ModelCard, *, model: nn.Module, val_images: torch.Tensor, val_labels: torch.Tensor, folder: Path
    ) -> ModelCard:
        """``card`` with this feature's fields for the final ``model`` (eval mode, CPU),
        written into ``folder`` (paths in a card are stored relative to the file's folder);
        the run's validation split is there for fields fitted on it."""
        return card

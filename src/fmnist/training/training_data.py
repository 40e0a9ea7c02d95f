"""The in-memory data of one run (data_prep.py builds it): what every training step reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fmnist.data import DataSource
from fmnist.data.classes import CLASS_NAMES


@dataclass(frozen=True)
class TrainingData:
    train_images: torch.Tensor  # uint8 (N, 28, 28); converted to float per batch
    train_labels: torch.Tensor  # int64 (N,)
    val_images: torch.Tensor
    val_labels: torch.Tensor
    source: DataSource
    description: dict  # for run.json: where the data came from, sizes, digest, class names
    class_names: tuple[str, ...] = CLASS_NAMES  # the data's (label i is class_names[i])

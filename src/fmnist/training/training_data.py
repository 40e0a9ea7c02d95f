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


SPLIT_SETTINGS = ("split_seed", "val_fraction", "subset", "full")


def split_settings(values: dict) -> dict:
    """What decides a run's train/validation split, from its config values (a dict as in
    config.json): the split seed (``split_seed``, else ``seed``), validation share, subset, full."""
    seed = values.get("split_seed")
    return {
        "split_seed": values.get("seed") if seed is None else seed,
        "val_fraction": values.get("val_fraction"),
        "subset": values.get("subset"),
        "full": bool(values.get("full")),
    }

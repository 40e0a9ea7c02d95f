"""Turn the training split into in-memory train/validation tensors (the test split is not read)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from fmnist.data import DataSource, load, stratified_split
from fmnist.errors import ConfigError
from fmnist.training.config import TrainConfig
from fmnist.training.specialist import group_indices, remap_to_group


@dataclass(frozen=True)
class TrainingData:
    train_images: torch.Tensor  # uint8 (N, 28, 28); converted to float per batch
    train_labels: torch.Tensor  # int64 (N,)
    val_images: torch.Tensor
    val_labels: torch.Tensor
    source: DataSource
    description: dict  # for run.json: where the data came from, sizes, digest


def prepare_data(
    config: TrainConfig, data: str | os.PathLike[str] | None = None, *, progress: bool = False
) -> TrainingData:
    split = load("train", data, progress=progress)
    images, labels = split.images, split.labels
    if config.subset is not None:
        if config.subset > len(labels):
            raise ConfigError(
                f"subset {config.subset} is larger than the {len(labels)} training images",
                f"use at most {len(labels)}",
            )
        images, labels = images[: config.subset], labels[: config.subset]
    if config.full:
        # The documented final retrain: every training image, no validation split.
        train_idx, val_idx = np.arange(len(labels)), np.arange(0)
    else:
        train_idx, val_idx = stratified_split(labels, config.val_fraction, seed=config.seed)
    if config.specialist is not None:
        # Split first, then keep the group's images: with the base run's seed and
        # val_fraction the specialist validates on exactly the base's validation images of
        # the group, none of which the base (or an --init run) was trained on.
        train_idx, val_idx = group_indices(labels, train_idx, config.specialist), group_indices(labels, val_idx, config.specialist)
        labels = remap_to_group(labels, config.specialist)
    description = {
        "root": str(split.source.root),
        "origin": split.source.origin,
        "format": split.files.format,
        "files": [str(p) for p in split.files.paths],
        "official": split.official,
        "content_digest": split.content_digest,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
    }
    return TrainingData(
        train_images=torch.from_numpy(np.ascontiguousarray(images[train_idx])),
        train_labels=torch.from_numpy(labels[train_idx].astype(np.int64)),
        val_images=torch.from_numpy(np.ascontiguousarray(images[val_idx])),
        val_labels=torch.from_numpy(labels[val_idx].astype(np.int64)),
        source=split.source,
        description=description,
    )

"""Turn the training split into in-memory train/validation tensors (the test split is not read)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from fmnist.data import load, stratified_split
from fmnist.data.classes import is_fashion
from fmnist.errors import ConfigError, DataError
from fmnist.training.config import TrainConfig
from fmnist.training.features import features_for
from fmnist.training.training_data import TrainingData


def split_seed_of(config: TrainConfig) -> int:
    """The seed of the run's train/validation split: ``split_seed``, else ``seed``."""
    return config.seed if config.split_seed is None else config.split_seed


def split_digest(train_indices: np.ndarray, val_indices: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of which images were trained and validated on: runs
    whose digests (and data) agree split alike (a teacher and its student must)."""
    digest = hashlib.sha256()
    for indices in (train_indices, val_indices):
        array = np.ascontiguousarray(indices, dtype=np.int64)
        digest.update(f"{len(array)}:".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def model_args_for(config: TrainConfig, class_names: tuple[str, ...]) -> dict:
    """The model arguments a run builds its model with: the config's, with one output per
    class of the data (a specialist has already set its group's count)."""
    if config.specialist is not None:
        return dict(config.model_args)
    wanted = config.model_args.get("num_classes")
    if wanted is not None and wanted != len(class_names):
        raise ConfigError(
            f"model_args num_classes is {wanted} but the data has {len(class_names)} classes",
            "leave num_classes out: it comes from the data",
        )
    return {**config.model_args, "num_classes": len(class_names)}


def check_resumed_classes(run_root: Path, data: TrainingData) -> None:
    """Refuse to continue a run on data whose classes differ from those it started with."""
    from fmnist.run import Run

    run = Run.create(run_root)
    recorded = run.provenance().data.get("class_names") if run.paths.provenance.is_file() else None
    if recorded is not None and tuple(recorded) != data.class_names:
        raise DataError(
            f"{run_root} was trained on {len(recorded)} classes ({', '.join(recorded[:4])}...), "
            f"this data has {len(data.class_names)} ({', '.join(data.class_names[:4])}...)",
            "resume with the data the run started with (--data)",
        )


def prepare_data(
    config: TrainConfig, data: str | os.PathLike[str] | None = None, *, progress: bool = False
) -> TrainingData:
    split = load("train", data, progress=progress)
    images, labels = split.images, split.labels
    if config.specialist is not None and not is_fashion(split.class_names):
        raise DataError(
            f"{split.source.root}: the {config.specialist!r} specialist needs Fashion-MNIST's classes, "
            f"this data has {len(split.class_names)} others ({', '.join(split.class_names[:5])}...)",
            "train a specialist only on Fashion-MNIST",
        )
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
        train_idx, val_idx = stratified_split(labels, config.val_fraction, seed=split_seed_of(config))
    for feature in features_for(config):  # e.g. a specialist keeps its group's images
        labels, train_idx, val_idx = feature.select_data(labels, train_idx, val_idx)
    description = {
        **split.describe(),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "split_digest": split_digest(train_idx, val_idx),
    }
    return TrainingData(
        train_images=torch.from_numpy(np.ascontiguousarray(images[train_idx])),
        train_labels=torch.from_numpy(labels[train_idx].astype(np.int64)),
        val_images=torch.from_numpy(np.ascontiguousarray(images[val_idx])),
        val_labels=torch.from_numpy(labels[val_idx].astype(np.int64)),
        source=split.source,
        description=description,
        class_names=split.class_names,
    )

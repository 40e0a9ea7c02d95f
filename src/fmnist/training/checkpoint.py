"""The training state saved after every epoch, so an interrupted run resumes exactly.

One safetensors file holds the weights, the optimizer's moments, the best weights so
far, the EMA weights and the random-number-generator states; one JSON document in its
metadata holds the rest (epoch, early-stopping and schedule state, history, config).
Writing is atomic, so ``kill -9`` at any moment leaves the previous epoch's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmnist.errors import RunError
from fmnist.tensorfile import (
    flatten_tensors,
    load_tensor_file,
    restore_tensors,
    save_tensor_file,
)

STATE_FORMAT = "fmnist-training-state/1"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.safetensors"


@dataclass
class TrainingState:
    epochs_done: int  # completed epochs; training continues with epoch index epochs_done
    step: int  # optimizer steps taken
    model: dict[str, torch.Tensor]
    optimizer: dict
    best_model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    rng: dict[str, torch.Tensor]  # generator name -> state (uint8 tensor)
    early_stopping: dict
    plateau: dict
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def save_training_state(path: Path, state: TrainingState) -> None:
    tensors: dict[str, torch.Tensor] = {}
    document = {
        "format": STATE_FORMAT,
        "epochs_done": state.epochs_done,
        "step": state.step,
        "model": flatten_tensors(state.model, "model", tensors),
        "optimizer": flatten_tensors(state.optimizer, "optimizer", tensors),
        "best_model": flatten_tensors(state.best_model, "best_model", tensors),
        "ema": flatten_tensors(state.ema, "ema", tensors) if state.ema is not None else None,
        "rng": flatten_tensors(state.rng, "rng", tensors),
        "early_stopping": state.early_stopping,
        "plateau": state.plateau,
        "history": state.history,
        "config": state.config,
    }
    save_tensor_file(path, tensors, document)


def load_training_state(path: Path) -> TrainingState:
    tensors, document = load_tensor_file(path)
    if document.get("format") != STATE_FORMAT:
        raise RunError(f"{path}: not an fmnist training checkpoint", "pass the run folder to --resume")
    restored = restore_tensors(document, tensors)
    optimizer = restored["optimizer"]
    # JSON turned the optimizer's integer parameter ids into strings; put them back.
    optimizer["state"] = {int(k): v for k, v in optimizer.get("state", {}).items()}
    return TrainingState(
        epochs_done=int(restored["epochs_done"]),
        step=int(restored["step"]),
        model=restored["model"],
        optimizer=optimizer,
        best_model=restored["best_model"],
        ema=restored["ema"],
        rng=restored["rng"],
        early_stopping=restored["early_stopping"],
        plateau=restored["plateau"],
        history=restored["history"],
        config=restored["config"],
    )

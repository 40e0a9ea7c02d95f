"""What the training loop tells its caller after each epoch and at the end, and how a
caller stops it.

``train(config, run_dir, on_epoch=callback)`` calls ``callback(EpochEnd(...))`` on rank 0
after each epoch's checkpoint is written (trackers log it, tuners prune on it); a callback
that raises ``StopTraining`` ends the run after that epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fmnist.training.config import TrainConfig


class StopTraining(Exception):
    """Raised by a per-epoch callback to end the run after this epoch, as early stopping
    does: the best epoch so far is kept and the model file written (``fmnist tune``'s time
    budget and pruner stop trials so)."""


@dataclass
class EpochEnd:
    """What a per-epoch callback receives. ``model`` is the one validated (EMA if enabled)."""

    record: dict  # the epoch's line of epochs.jsonl: epoch, losses, accuracies, lr, seconds, best
    model: nn.Module
    config: TrainConfig


OnEpoch = Callable[[EpochEnd], None]


@dataclass
class TrainResult:
    """What ``train`` and ``resume`` return."""

    run_dir: Path
    config: TrainConfig
    history: list[dict]
    best_epoch: int  # 1-based
    stopped_early: bool
    model: nn.Module  # best weights, eval mode, on the CPU
    is_main: bool = True  # False on the other ranks of a distributed run

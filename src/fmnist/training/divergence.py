"""Signs that a run is not learning: a loss that is no longer finite (the run stops), and
a model still at chance after two epochs (a warning, once)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from fmnist.errors import FmnistError

log = logging.getLogger(__name__)


class TrainingDiverged(FmnistError):
    """The loss became NaN or infinite."""


def diverged(which: str, loss: float, *, epoch: int, epochs_done: int, lr: float, checkpoint: Path) -> TrainingDiverged:
    """The error for a ``which`` ("training" or "validation") loss that became ``loss``."""
    # A first-epoch divergence leaves no run behind (out_folder.forget_unstarted_run), so
    # the same run folder takes the retry; a later one keeps its good epochs' checkpoint.
    kept = (
        f" and another run folder (the state after epoch {epochs_done} is kept in {checkpoint})"
        if epochs_done
        else ""
    )
    return TrainingDiverged(
        f"the {which} loss became {loss} in epoch {epoch}",
        f"train again with a lower learning rate (lr, now {lr:g}){kept}",
    )


class ChanceWatch:
    """Warns once when a run is still guessing after two epochs.

    A finite loss is no proof of learning: too high a rate for the run's number of steps
    can leave the network guessing for good. Both signs are required: validation accuracy
    at chance, and a training loss no better than the uniform guess's ln(classes) (label
    smoothing does not change that figure). A model that is merely slow to start, or a
    weight average still behind the weights, has the first without the second."""

    def __init__(self, classes: int, lr: float, *, quiet: bool = False) -> None:
        self.classes, self.lr, self.quiet = classes, lr, quiet  # quiet: ranks other than 0
        self.warned = False

    def update(self, epochs_done: int, val_accuracy: float, train_loss: float) -> None:
        uniform_loss = math.log(self.classes)
        if epochs_done < 2 or self.warned or val_accuracy > 1.5 / self.classes or train_loss < 0.9 * uniform_loss:
            return
        self.warned = True
        if self.quiet:
            return
        log.warning(
            "validation accuracy is %.1f%% after %d epochs, chance level for %d classes, and the training loss "
            "%.2f is no better than guessing (%.2f): the model is not learning; lower the learning rate "
            "(lr, now %g) or train on more images",
            100 * val_accuracy, epochs_done, self.classes, train_loss, uniform_loss, self.lr,
        )

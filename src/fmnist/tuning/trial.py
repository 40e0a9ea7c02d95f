"""One trial of a study: an ordinary run folder trained by ``fmnist.training.train``, scored
on the validation split only.

The objective is the best validation accuracy over the trial's epochs. With a time budget
(``trial_seconds``) only epochs that end within the budget count: the budget is spent by
the epochs' own time (training and validation, as ``epochs.jsonl`` records it; data
loading, model building and checkpoint writes are not counted), and the trial stops before
an epoch that would not end within it, judged by the last epoch's time. A trial whose
first epoch alone overruns the budget is pruned. The pruner sees the validation accuracy
after every epoch and may stop a trial early (it is then marked pruned). Either way the
run ends as early stopping ends it: the best epoch kept, the model file written, so every
trial folder is a finished run that ``fmnist evaluate`` takes. Nothing here reads the
test split.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError
from fmnist.training import EpochEnd, StopTraining, train
from fmnist.training.loop import TrainingDiverged
from fmnist.tuning.space import SearchSpace


class TrialFailed(Exception):
    """A trial whose settings could not train (refused together, or diverged); the study
    records it as failed, with the reason in the trial's ``error`` attribute, and goes on."""


def trial_folder(study_dir: Path, number: int) -> Path:
    return study_dir / f"trial-{number:04d}"


@dataclass
class TrialMonitor:
    """The per-epoch callback of one trial: reports validation accuracy to the trial, asks
    its pruner, and keeps the time budget."""

    trial: Any  # optuna.Trial
    budget_seconds: float | None = None
    used_seconds: float = 0.0
    best_accuracy: float | None = None
    epochs_counted: int = 0
    stopped_by: str | None = None  # "budget", "pruner" or None (ran its epochs)
    history: list[float] = field(default_factory=list)

    def __call__(self, end: EpochEnd) -> None:
        record = end.record
        self.used_seconds += record["seconds"]
        if self.budget_seconds is not None and self.used_seconds > self.budget_seconds:
            self.stopped_by = "budget"  # this epoch ended past the budget: it does not count
            raise StopTraining(f"{self.used_seconds:.3g} s used, over the {self.budget_seconds:g} s budget")
        accuracy = record["val_accuracy"]
        self.epochs_counted += 1
        self.history.append(accuracy)
        self.best_accuracy = accuracy if self.best_accuracy is None else max(self.best_accuracy, accuracy)
        self.trial.report(accuracy, step=record["epoch"])
        if self.trial.should_prune():
            self.stopped_by = "pruner"
            raise StopTraining(f"pruned: validation accuracy {accuracy:.4f} at epoch {record['epoch']}")
        if self.budget_seconds is not None and self.used_seconds + record["seconds"] > self.budget_seconds:
            self.stopped_by = "budget"
            raise StopTraining(
                f"another epoch of ~{record['seconds']:.3g} s would end past the {self.budget_seconds:g} s budget"
            )


def make_objective(
    space: SearchSpace,
    study_dir: Path,
    *,
    budget_seconds: float | None,
    data: str | None,
    progress: bool = False,
) -> Callable[[Any], float]:
    """The function ``study.optimize`` calls with each trial."""
    import optuna

    def objective(trial: optuna.Trial) -> float:
        values = {parameter.name: parameter.suggest(trial) for parameter in space.parameters}
        run_dir = trial_folder(study_dir, trial.number)
        # Where the trial's run folder is: with a shared storage, on the machine named.
        trial.set_user_attr("run", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        try:
            config = space.config(values)
        except ConfigError as error:
            trial.set_user_attr("error", error.problem)
            raise TrialFailed(error.problem) from None
        trial.set_user_attr("epochs_configured", config.epochs)
        monitor = TrialMonitor(trial, budget_seconds)
        try:
            train(config, run_dir, data=data, progress=progress, on_epoch=monitor)
        except TrainingDiverged as error:
            trial.set_user_attr("error", error.problem)
            raise TrialFailed(error.problem) from None
        finally:
            trial.set_user_attr("epochs", monitor.epochs_counted)
            trial.set_user_attr("seconds_used", round(monitor.used_seconds, 3))
            trial.set_user_attr("stopped_by", monitor.stopped_by)
        if monitor.best_accuracy is None:
            raise optuna.TrialPruned(
                f"its first epoch took {monitor.used_seconds:.1f} s, over the {budget_seconds:g} s budget"
            )
        if monitor.stopped_by == "pruner":
            raise optuna.TrialPruned(f"after epoch {monitor.epochs_counted}")
        return monitor.best_accuracy

    return objective

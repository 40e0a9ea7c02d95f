"""Experiment tracking: a run's figures sent to TensorBoard and/or MLflow as it trains.

``open_trackers(["tensorboard", "mlflow"], run_dir)`` returns one ``Trackers`` object that
is the per-epoch callback of ``train(config, ..., on_epoch=trackers)`` and, once the run is
calibrated and evaluated, takes its final figures (``trackers.finished(...)``). Used as a
context manager it marks the tracked run failed (or killed, on Ctrl-C) when training
raises. Each tracker needs its extra (fmnist[tensorboard], fmnist[mlflow]); a missing one
is refused before any training starts.

The metric names are the same for both: ``train/loss``, ``train/accuracy``, ``val/loss``,
``val/accuracy``, ``lr``, ``images_per_second``, ``epoch_seconds`` per epoch (step = epoch),
and ``test/accuracy``, ``test/loss``, ``test/ece_calibrated`` ... at the end.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from fmnist.errors import ConfigError

if TYPE_CHECKING:
    from fmnist.training.loop import EpochEnd

TRACKERS = ("tensorboard", "mlflow")

# epochs.jsonl key -> tracked metric name (None values, e.g. no validation with --full, are skipped).
EPOCH_METRICS = {
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "lr": "lr",
    "images_per_second": "images_per_second",
    "seconds": "epoch_seconds",
}


class Tracker(Protocol):
    def epoch(self, event: EpochEnd) -> None: ...

    def finished(self, metrics: dict | None, calibration: dict | None) -> None: ...

    def close(self, status: str) -> None: ...


def parse_log_targets(values: Iterable[str] | None) -> tuple[str, ...]:
    """``--log`` values (repeatable, each a comma list) as known tracker names, in order, once each."""
    names: list[str] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in TRACKERS:
                raise ConfigError(f"--log {name}: unknown tracker", f"choose from {', '.join(TRACKERS)}")
            if name not in names:
                names.append(name)
    return tuple(names)


def epoch_metrics(record: dict) -> dict[str, float]:
    """One epochs.jsonl record as tracked metric names and values."""
    return {name: float(record[key]) for key, name in EPOCH_METRICS.items() if record.get(key) is not None}


def final_metrics(metrics: dict | None, calibration: dict | None) -> dict[str, float]:
    """The figures of a finished run: test metrics (metrics.json) and the validation
    calibration fit (calibration.json), as tracked metric names."""
    values: dict[str, float] = {}
    if metrics is not None:
        low, high = metrics["test_accuracy_ci95"]
        values.update({
            "test/accuracy": metrics["test_accuracy"],
            "test/accuracy_ci95_low": low,
            "test/accuracy_ci95_high": high,
            "test/loss": metrics["test_loss"],
            "test/errors": metrics["errors"],
        })
        summary = metrics.get("calibration")
        if summary is not None:
            values.update({
                "test/ece_uncalibrated": summary["ece_before"],
                "test/ece_calibrated": summary["ece_after"],
                "test/nll_calibrated": summary["nll_after"],
                "temperature": summary["temperature"],
            })
    if calibration is not None:
        values.update({"val/ece_calibrated": calibration["val_ece_after"], "temperature": calibration["temperature"]})
    return {name: float(value) for name, value in values.items()}


def flat_config(config: object) -> dict[str, str]:
    """A config dataclass as flat ``a.b`` keys with string values (MLflow params, hparams)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = str(value)

    walk("", dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config)
    return flat


def is_main_process() -> bool:
    """Rank 0 of a torchrun job (or a plain process): the one that tracks."""
    return os.environ.get("RANK", "0") == "0"


class Trackers:
    """The chosen trackers as one per-epoch callback and one end-of-run hook."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers
        self.closed = False

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def __call__(self, event: EpochEnd) -> None:
        for tracker in self.trackers:
            tracker.epoch(event)

    def finished(self, *, metrics: dict | None = None, calibration: dict | None = None) -> None:
        """The run is trained (and calibrated/evaluated, when those figures are given): log them and close."""
        for tracker in self.trackers:
            tracker.finished(metrics, calibration)
        self.close("FINISHED")

    def close(self, status: str) -> None:
        if self.closed:
            return
        self.closed = True
        for tracker in self.trackers:
            tracker.close(status)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def open_trackers(names: Iterable[str], run_dir: Path) -> Trackers:
    """Trackers for ``names`` (from ``parse_log_targets``) writing about the run in ``run_dir``.
    Their extras are imported here, so a missing one is refused before training starts; on
    the other ranks of a torchrun job nothing is tracked."""
    trackers: list[Tracker] = []
    if not is_main_process():
        return Trackers(trackers)
    for name in names:
        if name == "tensorboard":
            from fmnist.tracking.tensorboard_writer import TensorBoardTracker

            trackers.append(TensorBoardTracker(run_dir))
        elif name == "mlflow":
            from fmnist.tracking.mlflow_writer import MlflowTracker

            trackers.append(MlflowTracker(run_dir))
        else:
            raise ConfigError(f"--log {name}: unknown tracker", f"choose from {', '.join(TRACKERS)}")
    return Trackers(trackers)

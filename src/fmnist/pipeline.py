"""A whole run, as ``fmnist train`` makes it: train, calibrate, evaluate, report.

    from fmnist.pipeline import run_pipeline
    from fmnist.training import resolve_config

    result = run_pipeline(resolve_config("fast", overrides={"epochs": 2}), "runs/quick")
    result.metrics["test_accuracy"], result.report

``fmnist.training.train`` alone leaves an uncalibrated model and no test figures; these
functions are what the command line calls, so a run made from Python holds the same files.
Steps: training (training/loop.py) -> temperature scaling on the validation split
(evaluation/calibration.py; skipped for a ``full`` run, which has none) -> the test-set
evaluation, metrics.json (evaluation/evaluate.py) -> figures and report.html (reports/).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fmnist.evaluation import CalibrationResult, calibrate_run, evaluate_run
from fmnist.reports import write_run_report
from fmnist.reports.run_report import check_report_inputs
from fmnist.training.config import TrainConfig
from fmnist.training.events import OnEpoch, TrainResult
from fmnist.training.loop import resume, train
from fmnist.training.run_folder import default_run_dir


@dataclass
class PipelineResult:
    training: TrainResult
    calibration: CalibrationResult | None  # None for a full run (no validation split), or off rank 0
    metrics: dict | None  # the test-set metrics (metrics.json); None with evaluate=False
    report: Path | None  # report.html; None with evaluate=False

    @property
    def run_dir(self) -> Path:
        return self.training.run_dir


def run_pipeline(
    config: TrainConfig,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    evaluate: bool = True,
    progress: bool = False,
    on_epoch: OnEpoch | None = None,
) -> PipelineResult:
    """Train ``config`` into ``run_dir`` (default: runs/<timestamp>-<model>), calibrate the
    model on the validation split, and with ``evaluate`` score it on the test set and write
    the report. ``data`` is the dataset for every step (default: found as ``fmnist`` finds
    it); ``on_epoch`` is passed to ``train``. Under torchrun only rank 0 goes past training."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config.model)
    trained = train(config, run_dir, data=data, progress=progress, on_epoch=on_epoch)
    return _after_training(trained, data, evaluate=evaluate)


def resume_pipeline(
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    evaluate: bool = True,
    progress: bool = False,
    on_epoch: OnEpoch | None = None,
) -> PipelineResult:
    """``run_pipeline`` for an interrupted run: continue its training, then the same steps."""
    trained = resume(run_dir, data=data, progress=progress, on_epoch=on_epoch)
    return _after_training(trained, data, evaluate=evaluate)


def evaluate_and_report(run_dir: str | os.PathLike[str], data: str | os.PathLike[str] | None = None) -> tuple[dict, Path]:
    """Score a trained run on the test set (metrics.json) and write its report: (metrics, report path).

    The run files the report reads are checked first, so a damaged one is refused before
    metrics.json and the stored predictions are replaced (no new metrics beside an old report)."""
    check_report_inputs(run_dir)
    predictions, metrics = evaluate_run(run_dir, data)
    return metrics, write_run_report(run_dir, predictions, metrics)


def _after_training(trained: TrainResult, data: str | os.PathLike[str] | None, *, evaluate: bool) -> PipelineResult:
    if not trained.is_main:
        return PipelineResult(trained, None, None, None)
    # Temperature scaling, so evaluation, predict and serve return calibrated probabilities.
    calibration = None if trained.config.full else calibrate_run(trained.run_dir, data)
    metrics, report = evaluate_and_report(trained.run_dir, data) if evaluate else (None, None)
    return PipelineResult(trained, calibration, metrics, report)

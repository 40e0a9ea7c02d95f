"""MLflow tracking (``fmnist train --log mlflow``): params, per-epoch metrics, final test
metrics and the run's files as artefacts.

Where: ``$MLFLOW_TRACKING_URI`` when set (a server, ``sqlite:///mlflow.db`` with the full
``mlflow`` package, a ``file:`` store), else the file store ``./mlruns`` in the working
directory, where MLflow itself puts it. MLflow 3 keeps the file store in maintenance mode
and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is true; fmnist sets that for a file
store unless the environment says otherwise. The experiment is ``$MLFLOW_EXPERIMENT_NAME``,
else "fmnist"; the MLflow run is named after the run folder and tagged with its absolute
path (``fmnist.run_dir``), so a resumed run (``train --resume``) continues the same
MLflow run instead of starting a second one.

Logged: params = the resolved config, flattened (``augment.enabled``, ``model_args.width``);
metrics per epoch (step = epoch) and, at the end, the test figures (``final_metrics``);
artefacts = config.json, run.json, epochs.jsonl, calibration.json, metrics.json and
report.html (the weights stay in the run folder). A failed run is marked FAILED, Ctrl-C
KILLED. A tracking store that stops answering during training is a warning, not the end
of the training: the run folder keeps every figure.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.errors import FmnistError
from fmnist.extras import require
from fmnist.run import RunPaths
from fmnist.tracking import epoch_metrics, final_metrics, flat_config

if TYPE_CHECKING:
    from fmnist.training.loop import EpochEnd

log = logging.getLogger("fmnist")

DEFAULT_STORE = "mlruns"
DEFAULT_EXPERIMENT = "fmnist"
RUN_DIR_TAG = "fmnist.run_dir"
MAX_PARAM_LENGTH = 6000  # MLflow's limit for one param value


class TrackingError(FmnistError):
    """The tracking store cannot be used."""


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the file store ./mlruns (as a file: URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Path(DEFAULT_STORE).resolve().as_uri()


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri and not uri.startswith(("databricks", "sqlite:"))


class MlflowTracker:
    def __init__(self, run_dir: Path) -> None:
        require("mlflow", feature="fmnist train --log mlflow")
        from mlflow.tracking import MlflowClient

        # What a store's failure raises: MlflowException, OSError (requests' errors included)
        # and, from the file store ("... is not a directory"), plain Exception; so Exception,
        # here only, where a tracker's failure must not end the training.
        self._errors: tuple[type[BaseException], ...] = (Exception,)
        self.uri = tracking_uri()
        if _is_file_store(self.uri):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.run_dir = Path(run_dir).resolve()
        self.run_id: str | None = None
        self._broken = False
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        try:  # before training: a store that cannot be used is refused now, not after an epoch
            self.client = MlflowClient(tracking_uri=self.uri)
            experiment = self.client.get_experiment_by_name(experiment_name)
            self.experiment_id = (
                experiment.experiment_id if experiment is not None else self.client.create_experiment(experiment_name)
            )
        except self._errors as error:
            raise TrackingError(
                f"MLflow tracking store {self.uri}: {_first_line(error)}",
                "set MLFLOW_TRACKING_URI to a store you can reach, or train without --log mlflow",
            ) from None

    def _call(self, what: str, action, *args, **kwargs) -> None:
        if self._broken:
            return
        try:
            action(*args, **kwargs)
        except self._errors as error:
            self._broken = True
            log.warning(
                "MLflow tracking stopped (%s: %s); the run folder %s keeps every figure",
                what, _first_line(error), self.run_dir,
            )

    def _start(self, config: object, first_epoch: int) -> None:
        from mlflow.entities import Param

        if first_epoch > 1:  # a resumed run: continue its latest MLflow run
            existing = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{RUN_DIR_TAG}` = '{_quoted(str(self.run_dir))}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if existing:
                self.run_id = existing[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
        run = self.client.create_run(self.experiment_id, run_name=self.run_dir.name, tags={RUN_DIR_TAG: str(self.run_dir)})
        self.run_id = run.info.run_id
        params = [Param(key, value[:MAX_PARAM_LENGTH]) for key, value in flat_config(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, value, now, step) for name, value in values.items()])

    def epoch(self, event: EpochEnd) -> None:
        if self.run_id is None:
            self._call("starting the MLflow run", self._start, event.config, int(event.record["epoch"]))
        if self.run_id is not None:
            self._step = int(event.record["epoch"])
            self._call("logging an epoch", self._log_metrics, epoch_metrics(event.record), self._step)

    def finished(self, metrics: dict | None, calibration: dict | None) -> None:
        if self.run_id is None:
            return
        self._call("logging the test metrics", self._log_metrics, final_metrics(metrics, calibration), getattr(self, "_step", 0))
        paths = RunPaths(self.run_dir)
        for path in (paths.config, paths.provenance, paths.epochs_log, paths.calibration, paths.metrics, paths.report):
            if path.is_file():
                self._call(f"logging {path.name}", self.client.log_artifact, self.run_id, str(path))

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self._call("closing the MLflow run", self.client.set_terminated, self.run_id, status)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")

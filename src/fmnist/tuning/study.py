"""`fmnist tune`: an Optuna study over a search space, every trial a run folder.

Storage is an SQLite file in the study folder by default (nothing to start), or any
SQLAlchemy URL, e.g. ``postgresql://user@host/db``: the same command started on several
machines then works on one study (Optuna's distributed mode: every worker asks the storage
for its next trial, the sampler sees every worker's results). A worker records a heartbeat
while it trains; a trial whose worker died (killed, machine lost) is marked failed by the
next worker to start a trial once the heartbeat is ``2 x heartbeat`` seconds old, and run
again once, under a new number.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError
from fmnist.extras import require
from fmnist.files import atomic_write_json
from fmnist.tuning.space import SearchSpace
from fmnist.tuning.trial import TrialFailed, make_objective

log = logging.getLogger(__name__)

PRUNERS = ("median", "hyperband", "none")
STUDY_FILE = "study.json"  # which study the trial folders here belong to
SQLITE_FILE = "study.db"
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the results (Optuna's default: 10)
FEATURE = "fmnist tune"


@dataclass(frozen=True)
class TrialRow:
    """One trial as the results table shows it."""

    number: int
    state: str  # complete, pruned, failed, running, waiting
    value: float | None  # best validation accuracy (a pruned trial: its last reported one)
    seconds: float | None  # wall time of the trial, data loading included
    params: dict[str, Any]
    epochs: int | None  # epochs that counted (within the budget)
    epochs_configured: int | None
    stopped_by: str | None
    run: str | None  # the trial's run folder, on ``host``
    host: str | None
    error: str | None
    retry_of: int | None  # the trial this one runs again (its worker died)
    baseline: bool


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str  # the URL with any password hidden
    rows: list[TrialRow]
    best: TrialRow | None
    best_config: Path | None  # the best trial's settings, a `fmnist train --config` file


def _optuna():
    return require("tune", "optuna", feature=FEATURE)


def make_pruner(name: Any) -> Any:
    """Median: stop a trial whose accuracy after an epoch is below the median of earlier
    trials at that epoch (from the 4th trial on, not on epoch 1: a one-cycle warm-up makes
    it noisy). Hyperband: successive halving over epochs, brackets from 1 epoch up. An
    Optuna pruner object (the Python API) is used as it is."""
    optuna = _optuna()
    if isinstance(name, optuna.pruners.BasePruner):
        return name
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)  # steps are 1-based epochs
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}", f"choose one of: {', '.join(PRUNERS)}")


STORAGE_ATTEMPTS = 4  # workers started together on a new database race to create its tables


def _rdb_storage(optuna: Any, url: str, engine_kwargs: dict, heartbeat: int) -> Any:
    """Optuna's RDBStorage, tried again when a worker started at the same moment was
    creating the tables (the loser's CREATE or version stamp fails on the winner's)."""
    import sqlalchemy.exc

    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(url: str, *, heartbeat: int) -> tuple[Any, str]:
    """An Optuna RDBStorage on ``url`` with heartbeats, and the URL with its password
    hidden; ConfigError in one line for a URL that is not one or a database that cannot be
    reached, MissingExtra for a missing driver."""
    optuna = _optuna()
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(
            f"--storage {url!r} is not a database URL", "use sqlite:///FILE or postgresql://USER@HOST/DATABASE"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() == "psycopg":
        require("tune-postgres", "psycopg", feature=f"--storage {parsed.drivername}://")
    # SQLite: several local workers take turns at the file's lock; wait instead of failing.
    engine_kwargs = {"connect_args": {"timeout": 60}} if backend == "sqlite" else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            storage = _rdb_storage(optuna, url, engine_kwargs, heartbeat)
        except ImportError:
            raise ConfigError(
                f"--storage {shown}: no Python driver for {parsed.drivername} is installed",
                "install fmnist[tune-postgres] for postgresql://, or the driver the URL names",
            ) from None
        except sqlalchemy.exc.SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            if parsed.password:
                first = first.replace(str(parsed.password), "***")
            raise ConfigError(
                f"--storage {shown}: cannot open the database ({first})",
                "check the URL and that the database server is running and reachable",
            ) from None
    return storage, shown


def _check_folder(study_dir: Path, study_name: str) -> bool:
    """Trial folders are named by trial number, so one folder holds one study's trials:
    refuse a folder of another study, or one holding other files. True when the folder is
    new to the study (its study.json is still to be written)."""
    marker = study_dir / STUDY_FILE
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            saved = None
        if not isinstance(saved, dict) or saved.get("study_name") != study_name:
            other = saved.get("study_name") if isinstance(saved, dict) else None
            raise ConfigError(
                f"--out {study_dir} holds the trials of {'study ' + repr(other) if other else 'another study'}, not {study_name!r}",
                f"pass --study-name {other} to continue it, or choose another --out" if other else "choose another --out",
            )
        return False
    if study_dir.is_file():
        raise ConfigError(f"--out {study_dir} is a file, not a folder", "choose a new folder for the study")
    if study_dir.exists() and any(study_dir.iterdir()):
        raise ConfigError(f"--out {study_dir} is not empty and holds no study", "choose a new or empty folder")
    return True


def _check_same_space(study: Any, space: SearchSpace, budget: float | None, *, show_only: bool) -> float | None:
    """Every worker of a study must search the same space under the same budget (only
    showing the study needs the same space); returns the study's budget."""
    wanted = {"space": space.describe(), "trial_seconds": budget}
    saved = study.user_attrs.get("fmnist")
    if saved is None:
        import sqlalchemy.exc

        try:
            study.set_user_attr("fmnist", wanted)
            return budget
        except sqlalchemy.exc.IntegrityError:  # another worker set it in the meantime
            saved = study.user_attrs.get("fmnist")
    if show_only and saved.get("space") == wanted["space"]:
        return saved.get("trial_seconds")
    if saved != wanted:
        differing = [key for key in ("recipe", "base", "space") if saved.get("space", {}).get(key) != wanted["space"][key]]
        if saved.get("trial_seconds") != budget:
            differing.append(f"--trial-seconds ({saved.get('trial_seconds')} there)")
        raise ConfigError(
            f"study {study.study_name!r} was started with another search space or budget (differs in {', '.join(differing)})",
            "start every worker with the same file and flags, or pass another --study-name",
        )
    return budget


def _row(trial: Any) -> TrialRow:
    attrs, system = trial.user_attrs, trial.system_attrs
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())
    return TrialRow(
        number=trial.number,
        state=state,
        value=value,
        seconds=duration,
        params=dict(trial.params),
        epochs=attrs.get("epochs"),
        epochs_configured=attrs.get("epochs_configured"),
        stopped_by=attrs.get("stopped_by"),
        run=attrs.get("run"),
        host=attrs.get("host"),
        error=attrs.get("error"),
        retry_of=system.get("failed_trial"),
        baseline=bool(attrs.get("baseline")),
    )


def trial_rows(study: Any) -> list[TrialRow]:
    return [_row(trial) for trial in study.get_trials(deepcopy=False)]


def _log_trial(study: Any, trial: Any) -> None:
    row = _row(trial)
    params = ", ".join(f"{name}={_short(value)}" for name, value in row.params.items())
    took = f" in {row.seconds:.1f} s" if row.seconds is not None else ""
    if row.state == "complete":
        budget = " (time budget)" if row.stopped_by == "budget" else ""
        log.info(
            "trial %d complete: validation accuracy %.4f after %s epochs%s%s; %s",
            row.number, row.value, row.epochs, budget, took, params,
        )
    elif row.state == "pruned":
        why = "by the pruner" if row.stopped_by == "pruner" else "(its first epoch overran the time budget)"
        log.info("trial %d pruned %s after %s epochs%s; %s", row.number, why, row.epochs, took, params)
    else:
        log.info("trial %d %s%s: %s; %s", row.number, row.state, took, row.error or "no reason recorded", params)


def _open_study(
    space: SearchSpace,
    study_dir: Path,
    name: str,
    *,
    storage: str | None,
    heartbeat: int,
    sampler: Any,
    pruner: Any,
    trial_seconds: float | None,
    show_only: bool,
) -> tuple[Any, str, float | None]:
    """The study ``name`` (created if new), its storage URL with the password hidden and
    its time budget; the folder claimed for it once the storage is open and the space checked."""
    optuna = _optuna()
    new_folder = _check_folder(study_dir, name)
    if storage is None:
        study_dir.mkdir(parents=True, exist_ok=True)  # the SQLite file goes in it
    url = storage or f"sqlite:///{(study_dir / SQLITE_FILE).resolve()}"
    rdb, shown = open_storage(url, heartbeat=heartbeat)
    study_dir.mkdir(parents=True, exist_ok=True)
    with _quiet(optuna):
        study = optuna.create_study(
            storage=rdb, study_name=name, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
        )
    budget = _check_same_space(study, space, trial_seconds, show_only=show_only)
    if new_folder:
        atomic_write_json(study_dir / STUDY_FILE, {"study_name": name, "storage": shown})
    return study, shown, budget


@contextlib.contextmanager
def _quiet(optuna: Any) -> Iterator[None]:
    """Optuna's own log lines off (fmnist logs each trial itself), restored afterwards."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune(
    space: SearchSpace,
    out: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    trials: int | None = 10,
    timeout: float | None = None,
    trial_seconds: float | None = None,
    pruner: Any = "median",
    seed: int | None = None,
    baseline: bool = False,
    heartbeat: int = 60,
    data: str | None = None,
    progress: bool = False,
    on_trial: Callable[[TrialRow], None] | None = None,
) -> TuneResult:
    """Run up to ``trials`` trials (and for at most ``timeout`` seconds, checked between
    trials) of the study ``study_name`` (default: the space file's name) in ``storage``
    (default: SQLite in ``out``/study.db), each trained into ``out``/trial-NNNN. Returns the
    whole study's trials (every worker's) and writes the best one's settings to
    ``out``/best.yaml. ``baseline``: a new study's first trial runs the base config's own
    values of the searched settings, as a reference row."""
    from fmnist.tuning.best_config import write_best_config

    optuna = _optuna()
    study_dir = Path(out)
    name = study_name or space.path.stem
    if trials is not None and trials < 0:
        raise ConfigError(f"trials must be zero or positive, got {trials}")
    if trial_seconds is not None and not trial_seconds > 0:
        raise ConfigError(f"trial seconds must be positive, got {trial_seconds}")
    if heartbeat < 1:
        raise ConfigError(f"heartbeat must be at least 1 second, got {heartbeat}")
    baseline_values = space.base_values() if baseline else None
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    study, shown, trial_seconds = _open_study(
        space, study_dir, name, storage=storage, heartbeat=heartbeat, sampler=sampler, pruner=make_pruner(pruner),
        trial_seconds=trial_seconds, show_only=trials == 0,
    )
    if baseline_values is not None and not study.get_trials(deepcopy=False):
        study.enqueue_trial(baseline_values, user_attrs={"baseline": True}, skip_if_exists=True)

    def after_trial(study: Any, trial: Any) -> None:
        _log_trial(study, trial)
        if on_trial is not None:
            on_trial(_row(trial))

    objective = make_objective(space, study_dir, budget_seconds=trial_seconds, data=data, progress=progress)
    if trials != 0:
        with _quiet(optuna), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=trials, timeout=timeout, catch=(TrialFailed,), callbacks=[after_trial])
    rows = trial_rows(study)
    complete = [row for row in rows if row.state == "complete"]
    best = max(complete, key=lambda row: (row.value, -row.number)) if complete else None
    best_config = None
    if best is not None:
        best_config = write_best_config(
            study_dir / "best.yaml", space, best, study_name=name, trials=rows, trial_seconds=trial_seconds
        )
    return TuneResult(study_name=name, storage=shown, rows=rows, best=best, best_config=best_config)

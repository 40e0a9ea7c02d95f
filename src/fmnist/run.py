"""The run folder as an API: one ``Run`` names every file of a run and reads and writes
them with types, so no module builds a run path from a string or parses its JSON by hand.

    run = Run("runs/20260101-120000-fast_cnn")   # RunError if the folder is not a run
    run.status                                    # finished / interrupted / failed / running
    run.config()                                  # TrainConfig
    run.history()                                 # [EpochRecord, ...]
    run.metrics().test_accuracy                   # after `fmnist evaluate`
    run.model()                                   # the saved model, ready for inference

Layout of a run folder (every file written atomically: a reader sees the old file or the
new one, never half of one):

    config.json            the resolved TrainConfig
    run.json               provenance: versions, machine, command, the training data
    epochs.jsonl           one EpochRecord per line
    checkpoints/last.safetensors   the training state after the last epoch (resume)
    model.safetensors      the one final model (best epoch's weights, calibrated)
    calibration.json       the temperature fitted on the validation split
    metrics.json           the test-set evaluation
    test_predictions.npz   the test-set probabilities of that evaluation (reused by
                           compare, ensemble and analyze while the model and data match)
    figures/*.png, report.html

This module sits below every layer (it imports only errors, files and numpy at load
time); the readers that return other layers' types import them when called.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import html
import io
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fmnist.bounded_json import JsonRefused, loads_bounded
from fmnist.errors import RunError
from fmnist.files import (
    TEMPORARY_SUFFIX,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

if TYPE_CHECKING:
    from fmnist.training.config import TrainConfig

CONFIG_FILE = "config.json"
PROVENANCE_FILE = "run.json"
EPOCHS_FILE = "epochs.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.safetensors"
MODEL_FILE = "model.safetensors"
CALIBRATION_FILE = "calibration.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.npz"
FIGURES_DIR = "figures"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
MAX_JSON_CHARS = 16 * 1024 * 1024  # a 100-class metrics.json is well under 1 MB
NOT_A_RUN_FIX = "pass a folder written by fmnist train"


@dataclass(frozen=True)
class RunPaths:
    """Where each artefact of a run lives; one run = one folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def provenance(self) -> Path:
        return self.root / PROVENANCE_FILE

    @property
    def epochs_log(self) -> Path:
        return self.root / EPOCHS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def calibration(self) -> Path:
        return self.root / CALIBRATION_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def test_predictions(self) -> Path:
        return self.root / PREDICTIONS_FILE

    @property
    def figures(self) -> Path:
        return self.root / FIGURES_DIR

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE  # flock-ed by the process training into the folder

    def figure(self, name: str) -> Path:
        return self.figures / name

    def files(self) -> list[Path]:
        """The run's own files, which no command's --out may replace."""
        return [
            self.config, self.provenance, self.epochs_log, self.last_checkpoint, self.model,
            self.metrics, self.test_predictions, self.report, self.calibration,
        ]

    def writable_folders(self) -> list[Path]:
        """Where training and evaluation write (atomically, via temporary files)."""
        return [self.root, self.checkpoints, self.figures]

    def is_run(self) -> bool:
        """Whether the folder holds a run: its config (written first) or its final model."""
        return self.config.is_file() or self.model.is_file()

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing but a lock file and the
        temporary files of interrupted writes (a run killed before its config was written)."""
        if not self.root.exists():
            return True
        return all(
            entry.name == LOCK_FILE or (entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX))
            for entry in self.root.iterdir()
        )


def files_of_run_around(model: str | os.PathLike[str]) -> list[Path]:
    """The run files an output must not replace, for a model given as a run folder or
    as a model file: the file itself and, when it lies in a run folder, the run's files."""
    path = Path(model).expanduser()
    folder = path if path.is_dir() else path.parent
    protected = [path] if not path.is_dir() else []
    paths = RunPaths(folder)
    if paths.is_run():
        protected += paths.files()
    return protected


def _bounded_text(path: Path) -> str:
    """A run file's UTF-8 text, refused (RunError) past MAX_JSON_CHARS bytes before more is
    read: memory does not grow with what a damaged or hostile file holds."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_JSON_CHARS + 1)
    if len(data) > MAX_JSON_CHARS:
        raise RunError(f"{path}: over {MAX_JSON_CHARS:,} bytes, far larger than a run file", _damaged_fix())
    return data.decode("utf-8")


def not_a_run_error(path: str | os.PathLike[str]) -> RunError:
    return RunError(f"{path} is not an fmnist run folder (no {CONFIG_FILE}/{MODEL_FILE})", NOT_A_RUN_FIX)


# -- typed records ---------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EpochRecord:
    """One line of epochs.jsonl. The validation figures are None for a --full run (no
    validation split); ``best`` marks the epoch whose weights were kept so far."""

    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's augmented batches (nats)
    train_accuracy: float  # on those batches, so below the clean-image accuracy
    val_loss: float | None
    val_accuracy: float | None
    lr: float  # the rate at the epoch's last step
    seconds: float  # wall time of the epoch, validation included
    images_per_second: float  # training images over the training part of the epoch
    best: bool

    @classmethod
    def from_dict(cls, values: Any, *, where: str = "epoch record") -> EpochRecord:
        """A record from its JSON object; a RunError naming ``where`` when malformed."""
        if not isinstance(values, dict):
            raise RunError(f"{where}: expected an object, found {type(values).__name__}", _damaged_fix())
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
        if missing:
            raise RunError(f"{where}: no {', '.join(missing)}", _damaged_fix())
        optional = {"val_loss", "val_accuracy"}
        for f in dataclasses.fields(cls):
            value = values[f.name]
            if f.name == "best":
                ok = isinstance(value, bool)
            elif f.name == "epoch":
                ok = _is_int(value) and value >= 1
            else:
                ok = _is_number(value) or (f.name in optional and value is None)
            if not ok:
                raise RunError(f"{where}: {f.name} is {value!r}", _damaged_fix())
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _damaged_fix() -> str:
    return "the run folder was edited or damaged; train the run again"


# run.json's data fields that readers use as they are (digests compared, the root opened,
# class names joined): a damaged type is refused once, in Run.provenance, for all of them.
_DATA_FIELDS = {
    "content_digest": ("a digest", lambda value: isinstance(value, str)),
    "split_digest": ("a digest", lambda value: isinstance(value, str)),
    "root": ("a folder name", lambda value: isinstance(value, str)),
    "class_names": ("a list of class names", lambda value: isinstance(value, list) and all(isinstance(name, str) for name in value)),
}


@dataclass(frozen=True)
class Provenance:
    """run.json: what a reader needs to trust a run's figures. Fields missing from older
    runs are None; ``document`` is the whole file as written."""

    document: dict
    fmnist: str | None = None
    git_revision: str | None = None
    git_dirty: bool | None = None
    python: str | None = None
    torch: str | None = None
    numpy: str | None = None
    platform: str | None = None
    processor: str | None = None
    cpu: dict | None = None  # {"model": name, "flags": the speed-relevant ones}
    cpu_count: int | None = None
    cpus_available: int | None = None
    torch_threads: int | None = None
    torch_threads_from: str | None = None
    processes: int | None = None
    device: str | None = None
    autocast: str | None = None
    command: list[str] | None = None
    started: str | None = None  # ISO 8601 with the UTC offset
    # The training data (data.Split.description() plus the train/validation image counts).
    data: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, document: dict) -> Provenance:
        names = {f.name for f in dataclasses.fields(cls)} - {"document", "data"}
        data = document.get("data")
        return cls(
            document=document,
            data=dict(data) if isinstance(data, dict) else {},
            **{name: document.get(name) for name in names},
        )

    @property
    def data_digest(self) -> str | None:
        """The training data's content digest (order- and format-independent)."""
        return self.data.get("content_digest")


@dataclass(frozen=True)
class CalibrationResult:
    """calibration.json: the temperature fitted on the validation split (evaluation/calibration.py)
    and the validation NLL and ECE before and after it."""

    temperature: float
    val_images: int
    val_nll_before: float
    val_nll_after: float
    val_ece_before: float
    val_ece_after: float
    bins: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Metrics:
    """metrics.json: the test-set evaluation. The common figures are typed fields; the
    whole document (classification report, confusion matrix, calibration, and for an
    ensemble or a specialist their own sections) is ``document``."""

    document: dict
    test_accuracy: float
    test_accuracy_ci95: tuple[float, float]
    test_images: int
    test_loss: float
    errors: int
    class_names: list[str]
    evaluated: str  # ISO 8601
    model: str | None
    data: dict  # the test data's description (content_digest included)

    @classmethod
    def from_dict(cls, document: Any, *, where: str = METRICS_FILE) -> Metrics:
        if not isinstance(document, dict):
            raise RunError(f"{where}: expected an object, found {type(document).__name__}", _reevaluate_fix(where))
        checks = {
            "test_accuracy": _is_number,
            "test_accuracy_ci95": lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)),
            "test_images": _is_int,
            "test_loss": _is_number,
            "errors": _is_int,
            "class_names": lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
            "evaluated": lambda v: isinstance(v, str),
        }
        for key, ok in checks.items():
            if key not in document or not ok(document[key]):
                raise RunError(f"{where}: {key} is missing or malformed", _reevaluate_fix(where))
        data = document.get("data")
        model = document.get("model")
        return cls(
            document=document,
            test_accuracy=float(document["test_accuracy"]),
            test_accuracy_ci95=(float(document["test_accuracy_ci95"][0]), float(document["test_accuracy_ci95"][1])),
            test_images=document["test_images"],
            test_loss=float(document["test_loss"]),
            errors=document["errors"],
            class_names=list(document["class_names"]),
            evaluated=document["evaluated"],
            model=model if isinstance(model, str) else None,
            data=dict(data) if isinstance(data, dict) else {},
        )


def _reevaluate_fix(where: str) -> str:
    return f"run fmnist evaluate on the run again to rewrite {Path(where).name}"


@dataclass(frozen=True)
class ModelFingerprint:
    """A model file as it was when predictions were made: a rewrite (calibration, a new
    training) replaces the file atomically, so its inode, size or mtime changes."""

    path: str  # absolute
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> ModelFingerprint:
        resolved = Path(path).expanduser().resolve()
        status = resolved.stat()
        return cls(path=str(resolved), size=status.st_size, mtime_ns=status.st_mtime_ns, inode=status.st_ino)

    def current(self) -> bool:
        """Whether the file is still the one fingerprinted."""
        try:
            return ModelFingerprint.of(self.path) == self
        except OSError:
            return False


def arrays_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays (test images and labels) in their order (shapes and dtypes included).
    Unlike the data's content digest, which ignores order, it changes when the images are
    reordered, which would misalign stored per-image predictions."""
    digest = hashlib.sha256()
    for array in map(np.ascontiguousarray, arrays):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@dataclass
class TestPredictions:
    """The test-set output of an evaluation, stored in test_predictions.npz (plain arrays,
    read with allow_pickle=False), so later views need not run the model again."""

    __test__ = False  # not a pytest test class, despite the name

    probabilities: np.ndarray  # float32 (N, C), calibrated, rows sum to 1
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    data_digest: str  # arrays_digest of the test images and labels predicted on
    models: list[ModelFingerprint]  # every model file the probabilities depend on
    tta_flip: bool | None  # as requested: None = each model's own setting
    model: str = ""  # the model's registry name (what metrics.json calls "model")
    logits: np.ndarray | None = None  # float32 (N, C) before the temperature; None when combined

    def is_current(self, data_digest: str, *, tta_flip: bool | None = None) -> bool:
        """Whether these predictions are what predicting again would give: the same data,
        the same test-time augmentation and every model file unchanged since."""
        return (
            self.data_digest == data_digest
            and self.tta_flip == tta_flip
            and bool(self.models)
            and all(model.current() for model in self.models)
        )


# -- status ----------------------------------------------------------------------------------
class RunStatus(str, enum.Enum):
    RUNNING = "running"  # a process holds the folder's lock: training now
    FINISHED = "finished"  # model.safetensors written
    INTERRUPTED = "interrupted"  # no model yet: `fmnist train --resume` continues it
    FAILED = "failed"  # no model, and its config or checkpoint is unreadable: cannot be resumed

    def __str__(self) -> str:
        return self.value


def _flocked(path: Path) -> bool:
    """Whether a process holds an flock on ``path``, read from /proc/locks without taking
    the lock (probing by locking could refuse a trainer starting at that instant)."""
    try:
        status = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return False
    wanted = (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; blocked waiters have "->"
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        parts = fields[5].split(":")
        try:
            if len(parts) == 3 and (int(parts[0], 16), int(parts[1], 16), int(parts[2])) == wanted:
                return True
        except ValueError:
            continue
    return False


# -- the run -----------------------------------------------------------------------------------
class Run:
    """One run folder. ``Run(path)`` opens an existing run (RunError if the folder holds
    none); ``Run.create(path)`` names a folder a run is about to be written into."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        root = Path(path).expanduser()
        if not root.is_dir():
            what = "a file" if root.exists() else "no such folder"
            raise RunError(f"{root} is not an fmnist run folder ({what})", NOT_A_RUN_FIX)
        self.paths = RunPaths(root)
        if not self.paths.is_run():
            raise not_a_run_error(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Run:
        return cls(path)

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Run:
        """A Run for a folder that need not hold a run yet (training, an ensemble's output)."""
        run = cls.__new__(cls)
        run.paths = RunPaths(Path(path).expanduser())
        return run

    @classmethod
    def of_model(cls, model: str | os.PathLike[str]) -> Run:
        """The run a model argument belongs to: the folder itself, or a model file's folder
        (which need not hold a run: evaluating a lone model file writes beside it)."""
        path = Path(model).expanduser()
        return cls(path) if path.is_dir() else cls.create(path.parent)

    @staticmethod
    def is_run(path: str | os.PathLike[str]) -> bool:
        path = Path(path).expanduser()
        return path.is_dir() and RunPaths(path).is_run()

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def name(self) -> str:
        return self.paths.root.resolve().name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.root.resolve() == other.root.resolve()

    def __hash__(self) -> int:
        return hash(self.root.resolve())

    # -- state -----------------------------------------------------------------------------
    @property
    def status(self) -> RunStatus:
        if self.paths.lock.is_file() and _flocked(self.paths.lock):
            return RunStatus.RUNNING
        if self.paths.model.is_file():
            return RunStatus.FINISHED
        return RunStatus.INTERRUPTED if self.resumable() else RunStatus.FAILED

    def resumable(self) -> bool:
        """Whether `fmnist train --resume` can continue the run: no model yet, a valid
        config and (when there is one) a readable checkpoint of the training state."""
        if self.paths.model.is_file() or not self.paths.config.is_file():
            return False
        try:
            self.config()
        except RunError:
            return False
        if not self.paths.last_checkpoint.exists():
            return True  # killed before the first epoch ended: resumes from the start
        from safetensors import SafetensorError, safe_open

        from fmnist.tensorfile import METADATA_KEY
        from fmnist.training.checkpoint import STATE_FORMAT

        try:
            with safe_open(str(self.paths.last_checkpoint), framework="pt") as handle:
                document = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
        except (OSError, ValueError, SafetensorError):
            return False
        return isinstance(document, dict) and document.get("format") == STATE_FORMAT

    @property
    def evaluated(self) -> bool:
        return self.paths.metrics.is_file()

    @property
    def calibrated(self) -> bool:
        return self.paths.calibration.is_file()

    # -- readers ---------------------------------------------------------------------------
    def _json(self, path: Path) -> Any:
        try:
            text = _bounded_text(path)
        except FileNotFoundError:
            raise RunError(f"{path}: no such file", _missing_fix(path)) from None
        except UnicodeDecodeError:
            raise RunError(f"{path}: not UTF-8 text", _damaged_fix()) from None
        try:
            return loads_bounded(text, max_chars=MAX_JSON_CHARS, finite=False)
        except JsonRefused as error:
            raise RunError(f"{path}: {error}", _damaged_fix()) from None

    def config(self) -> TrainConfig:
        """config.json as a validated TrainConfig; a RunError naming the file."""
        from fmnist.errors import ConfigError
        from fmnist.training.config import config_from_dict

        fix = "restore the run's config.json, or start a new run in another folder"
        try:
            values = self._json(self.paths.config)
        except RunError as error:
            raise RunError(error.problem, fix) from None
        try:
            return config_from_dict(values)
        except ConfigError as error:
            raise RunError(f"{self.paths.config}: {error.problem}", fix) from None

    def config_values(self) -> dict:
        """config.json as written (plain JSON values), for comparing and displaying."""
        values = self._json(self.paths.config)
        if not isinstance(values, dict):
            raise RunError(f"{self.paths.config}: expected an object of settings", _damaged_fix())
        return values

    def provenance(self) -> Provenance:
        document = self._json(self.paths.provenance)
        if not isinstance(document, dict):
            raise RunError(f"{self.paths.provenance}: expected an object", _damaged_fix())
        data = document.get("data")
        if data is not None and not isinstance(data, dict):
            # Read as {} it would skip every digest check, as for a run from before digests.
            raise RunError(f"{self.paths.provenance}: data is not an object ({type(data).__name__})", _damaged_fix())
        provenance = Provenance.from_dict(document)
        for key, (what, valid) in _DATA_FIELDS.items():
            value = provenance.data.get(key)
            if value is not None and not valid(value):
                raise RunError(f"{self.paths.provenance}: data.{key} is not {what} ({type(value).__name__})", _damaged_fix())
        return provenance

    def history(self) -> list[EpochRecord]:
        """epochs.jsonl as EpochRecords; [] when no epoch has finished yet."""
        path = self.paths.epochs_log
        if not path.is_file():
            return []
        try:
            lines = _bounded_text(path).splitlines()
        except UnicodeDecodeError:
            raise RunError(f"{path}: not UTF-8 text", _damaged_fix()) from None
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                values = loads_bounded(line, max_chars=MAX_JSON_CHARS, finite=False)
            except JsonRefused as error:
                raise RunError(f"{path}, line {number}: {error}", _damaged_fix()) from None
            records.append(EpochRecord.from_dict(values, where=f"{path}, line {number}"))
        return records

    def metrics(self) -> Metrics:
        """metrics.json; a RunError saying how to evaluate when the run has none yet."""
        if not self.paths.metrics.is_file():
            raise RunError(f"{self.root}: not evaluated yet (no {METRICS_FILE})", f"run fmnist evaluate {self.root}")
        return Metrics.from_dict(self._json(self.paths.metrics), where=str(self.paths.metrics))

    def calibration(self) -> CalibrationResult | None:
        """calibration.json, or None for a run never calibrated (a --full run has no
        validation split to fit on)."""
        if not self.paths.calibration.is_file():
            return None
        values = self._json(self.paths.calibration)
        names = [f.name for f in dataclasses.fields(CalibrationResult)]
        if not isinstance(values, dict) or not all(_is_number(values.get(name)) for name in names):
            raise RunError(f"{self.paths.calibration}: malformed", f"calibrate again with fmnist calibrate {self.root}")
        return CalibrationResult(**{name: values[name] for name in names})

    def model(self) -> Any:
        """The final model (model.safetensors), validated and ready for inference: a
        fmnist.models.LoadedModel (not named in the signature: models/ is built on this
        module, so naming it here would make the two import each other)."""
        from fmnist.models.saved import load_model

        return load_model(self.model_path())

    def model_path(self) -> Path:
        if not self.paths.model.is_file():
            raise RunError(
                f"{self.root}: no {MODEL_FILE} in this run folder (training unfinished?)",
                f"finish it with `fmnist train --resume {self.root}`, or pass a model file",
            )
        return self.paths.model

    def test_predictions(self) -> TestPredictions | None:
        """The stored test predictions of the last evaluation, or None when there are none;
        a RunError when the file is damaged."""
        path = self.paths.test_predictions
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                contents = {key: arrays[key] for key in arrays.files}
            meta = loads_bounded(str(contents.pop("meta")), max_chars=MAX_JSON_CHARS)
            probabilities = contents["probabilities"]
            labels = contents["labels"]
            logits = contents.get("logits")
            stored = TestPredictions(
                probabilities=probabilities,
                labels=labels,
                logits=logits,
                class_names=list(meta["class_names"]),
                data_digest=str(meta["data_digest"]),
                models=[ModelFingerprint(**model) for model in meta["models"]],
                tta_flip=meta["tta_flip"],
                model=str(meta.get("model", "")),
            )
        except (OSError, ValueError, KeyError, TypeError, JsonRefused, zipfile.BadZipFile) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise RunError(f"{path}: not readable ({first})", f"delete it and run fmnist evaluate {self.root}") from None
        _check_predictions(path, stored)
        return stored

    # -- writers (atomic) ------------------------------------------------------------------
    def write_config(self, config: TrainConfig) -> None:
        from fmnist.training.config import dump_config

        atomic_write_text(self.paths.config, dump_config(config))

    def write_provenance(self, document: dict) -> None:
        atomic_write_json(self.paths.provenance, document)

    def write_history(self, records: Iterable[EpochRecord | dict]) -> None:
        """Rewrite epochs.jsonl whole (a kill between epochs leaves the previous file)."""
        lines = [json.dumps(r.to_dict() if isinstance(r, EpochRecord) else r) + "\n" for r in records]
        atomic_write_text(self.paths.epochs_log, "".join(lines))

    def write_metrics(self, document: dict) -> None:
        atomic_write_json(self.paths.metrics, document)

    def write_calibration(self, result: CalibrationResult | dict) -> None:
        atomic_write_json(self.paths.calibration, result if isinstance(result, dict) else result.to_dict())

    def write_test_predictions(self, stored: TestPredictions) -> None:
        _check_predictions(self.paths.test_predictions, stored)
        meta = {
            "class_names": stored.class_names,
            "data_digest": stored.data_digest,
            "models": [dataclasses.asdict(model) for model in stored.models],
            "tta_flip": stored.tta_flip,
            "model": stored.model,
        }
        arrays = {
            "probabilities": np.asarray(stored.probabilities, dtype=np.float32),
            "labels": np.asarray(stored.labels, dtype=np.int64),
            "meta": np.array(json.dumps(meta)),
        }
        if stored.logits is not None:
            arrays["logits"] = np.asarray(stored.logits, dtype=np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with atomic_path(self.paths.test_predictions) as tmp:
            tmp.write_bytes(buffer.getvalue())

    def write_figure(self, name: str, png: bytes) -> Path:
        path = self.paths.figure(name)
        atomic_write_bytes(path, png)
        return path

    def write_report(self, page: str) -> Path:
        atomic_write_text(self.paths.report, page)
        return self.paths.report

    # -- display ---------------------------------------------------------------------------
    def summary(self) -> dict:
        """A few facts for listings (`fmnist runs`, repr): never raises for a damaged file,
        whose entry is then None."""
        facts: dict[str, Any] = {"run": str(self.root), "status": str(self.status)}
        try:
            config = self.config_values()
            facts.update(model=config.get("model"), recipe=config.get("recipe"), seed=config.get("seed"))
        except RunError:
            facts.update(model=None, recipe=None, seed=None)
        try:
            history = self.history()
        except RunError:
            history = []
        facts["epochs"] = len(history)
        best = [record for record in history if record.best]
        facts["best_val_accuracy"] = best[-1].val_accuracy if best else None
        try:
            facts["test_accuracy"] = self.metrics().test_accuracy if self.evaluated else None
        except RunError:
            facts["test_accuracy"] = None
        return facts

    def __repr__(self) -> str:
        facts = self.summary()
        parts = [str(facts["status"])]
        if facts["model"]:
            parts.append(f"{facts['model']} ({facts['recipe']}, seed {facts['seed']})")
        parts.append(f"{facts['epochs']} epochs")
        if facts["test_accuracy"] is not None:
            parts.append(f"test accuracy {facts['test_accuracy']:.2%}")
        return f"Run({str(self.root)!r}: {', '.join(parts)})"

    def _repr_html_(self) -> str:
        facts = self.summary()
        rows = {
            "run": facts["run"],
            "status": facts["status"],
            "model": facts["model"],
            "recipe": facts["recipe"],
            "seed": facts["seed"],
            "epochs": facts["epochs"],
            "best validation accuracy": None if facts["best_val_accuracy"] is None else f"{facts['best_val_accuracy']:.2%}",
            "test accuracy": None if facts["test_accuracy"] is None else f"{facts['test_accuracy']:.2%}",
        }
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(key)}</th><td>{html.escape('—' if value is None else str(value))}</td></tr>"
            for key, value in rows.items()
        )
        return f"<table class='fmnist-run'>{body}</table>"


def _missing_fix(path: Path) -> str:
    if path.name == CONFIG_FILE:
        return "pass a folder written by fmnist train"
    return "the run folder is incomplete; train the run again"


def _check_predictions(path: Path, stored: TestPredictions) -> None:
    probabilities, labels = np.asarray(stored.probabilities), np.asarray(stored.labels)
    classes = len(stored.class_names)
    problems = []
    if probabilities.ndim != 2 or probabilities.shape[1] != classes or probabilities.dtype != np.float32:
        problems.append(f"probabilities {probabilities.dtype} {probabilities.shape} for {classes} classes")
    elif not np.isfinite(probabilities).all():
        problems.append("probabilities not finite")
    if labels.ndim != 1 or len(labels) != len(probabilities) or labels.dtype != np.int64:
        problems.append(f"labels {labels.dtype} {labels.shape}")
    elif len(labels) and (labels.min() < 0 or labels.max() >= classes):
        problems.append("labels out of range")
    if stored.logits is not None and np.asarray(stored.logits).shape != probabilities.shape:
        problems.append(f"logits {np.asarray(stored.logits).shape}")
    if problems:
        raise RunError(f"{path}: malformed test predictions ({'; '.join(problems)})", "delete it and evaluate the run again")


def find_runs(folder: str | os.PathLike[str]) -> list[Run]:
    """The runs directly inside ``folder`` (and ``folder`` itself if it is one), by name."""
    folder = Path(folder).expanduser()
    if Run.is_run(folder):
        return [Run(folder)]
    if not folder.is_dir():
        raise RunError(f"{folder}: no such folder", "pass the folder holding your runs (default runs/)")
    return [Run(entry) for entry in sorted(folder.iterdir()) if Run.is_run(entry)]

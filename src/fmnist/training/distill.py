"""Knowledge distillation: a student trained on its teachers' probabilities mixed with the labels.

The loss of a batch is ``(1 - w) * CE(labels) + w * T^2 * KL(teacher_T || student_T)``, where
``teacher_T`` averages each teacher's ``softmax(logits / T)`` (an ensemble of runs teaches as
one) and ``student_T`` is the student's log-softmax at the same temperature; the ``T^2``
keeps the soft term's gradients at the scale of the hard one's (Hinton et al. 2015).

Running a big teacher on every training batch would cost it its own training time again, so
the teachers' logits are computed once, before the first step, for every training image in
every *discrete view* the student's augmentation can produce (the crop windows times the
flip; augment.apply_view), and looked up by image and view during training. They are cached
in each teacher's run folder (``teacher_outputs/<key>.npz``), keyed by the teacher's weights,
the training images and the views, so later students reuse them. The continuous parts of the
augmentation (rotations, fractional shifts, erasing) are not views: the student is taught
the teacher's answer on the view they were applied to.

Validation stays honest only if no teacher trained on the student's validation images, so
every teacher must split the data as the student does (the same data, subset, validation
share and split seed; ``split_seed`` lets runs of different seeds share a split).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from fmnist.augment import AugmentConfig, apply_view, view_count
from fmnist.data.npz import NPZ_READ_ERRORS, npy_header
from fmnist.errors import ConfigError, DataError, RunError
from fmnist.files import atomic_path
from fmnist.run import Run, arrays_digest
from fmnist.training.hooks import TrainingFeature
from fmnist.training.training_data import SPLIT_SETTINGS, split_settings

if TYPE_CHECKING:
    from torch import nn

    from fmnist.inference.predictor import Predictor
    from fmnist.models import ModelCard
    from fmnist.training.config import TrainConfig
    from fmnist.training.training_data import TrainingData

log = logging.getLogger(__name__)
CACHE_FOLDER = "teacher_outputs"
CACHE_FORMAT = 1
# Teacher targets are held in memory as float32 (images x views x classes): bounded, so a
# crop padding of 14 on a 100-class dataset is a one-line refusal, not a swap storm.
MAX_TARGET_VALUES = 250_000_000  # 1 GB
DAMAGED_FIX = "the teacher's run folder was edited or damaged; train the teacher again"


def _split_differences(teacher: dict, student: dict) -> list[str]:
    return [f"{key} {teacher[key]!r} vs {student[key]!r}" for key in SPLIT_SETTINGS if teacher[key] != student[key]]


@dataclass(frozen=True)
class TeacherCost:
    """What a student's teachers cost, reported next to the student's own figures."""

    flops_per_image: int  # forward FLOPs of one image through all teachers together
    train_seconds: float  # the teachers' own training time (their epoch logs)
    output_seconds: float  # computing their outputs for this run (0 when all were cached)
    cached: bool  # every teacher's outputs came from its cache
    views: int  # discrete views per training image the outputs cover

    def to_dict(self) -> dict:
        return {
            "flops_per_image": self.flops_per_image,
            "train_seconds": round(self.train_seconds, 1),
            "output_seconds": round(self.output_seconds, 1),
            "cached": self.cached,
            "views": self.views,
        }


def _teacher_runs(config: TrainConfig) -> list[Run]:
    """The teachers as Run objects; a RunError names a folder that is not a finished run."""
    runs = []
    for path in config.teachers:
        run = Run.open(path)  # refuses a folder that is not a run, in one line
        if not run.paths.model.is_file():
            raise RunError(f"teacher {path}: the run has no model.safetensors yet", "let it finish, or resume it")
        runs.append(run)
    return runs


def _base_run(run: Run) -> Run | None:
    """The base run of a specialist teacher (config.json's base_run), else None."""
    base_run = run.config_values().get("base_run")
    if not base_run:
        return None
    if not isinstance(base_run, str):
        raise RunError(f"{run.paths.config}: base_run is not a folder name ({type(base_run).__name__})", DAMAGED_FIX)
    return Run.open(base_run)


def _recorded_digest(run: Run, key: str) -> str | None:
    """run.json's ``data[key]`` digest (its type checked by Run.provenance); None for a run
    that predates it."""
    return run.provenance().data.get(key) if run.paths.provenance.is_file() else None


def check_teacher_splits(config: TrainConfig) -> None:
    """Refuse a teacher (or a teacher specialist's base run) that split the data otherwise
    than this run: it has trained on some of this run's validation images, which would make
    validation accuracy, and every choice made on it, optimistic."""
    student = split_settings(config.to_dict())
    if student["full"]:
        return  # no validation split to protect
    for run in _teacher_runs(config):
        values = run.config_values()
        to_check = [(run.root, values)]
        base = _base_run(run)
        if base is not None:
            to_check.append((base.root, base.config_values()))
        for root, teacher_values in to_check:
            differences = _split_differences(split_settings(teacher_values), student)
            if differences:
                raise ConfigError(
                    f"teacher {root} split the data otherwise than this run ({'; '.join(differences)}): "
                    "it trained on some of this run's validation images",
                    "train the student with the teacher's split (e.g. --set split_seed=S --val-fraction F) "
                    "or teachers with --set split_seed=S",
                )


def _model_predictors(predictor: Predictor) -> list[Predictor]:
    """The predictors of the models behind ``predictor``: a combined specialist's base and
    specialist, else the predictor itself."""
    from fmnist.inference.combined import SpecialistPredictor

    return [predictor.base, predictor.specialist] if isinstance(predictor, SpecialistPredictor) else [predictor]


def _weights_digest(predictor: Predictor) -> str:
    """SHA-256 of the weights behind a predictor (a combined specialist's two models and its
    share): what the logits depend on (models.saved.weights_digest: not the file's bytes,
    which calibration rewrites with a new temperature)."""
    from fmnist.models.saved import weights_digest

    parts = _model_predictors(predictor)
    if parts == [predictor] and getattr(predictor, "module", None) is not None:
        return weights_digest(predictor.module)
    digest = hashlib.sha256()
    if parts != [predictor]:  # a combination: its rule is part of what it answers
        digest.update(json.dumps([predictor.classes, predictor.weight]).encode())
    for part in parts:
        module = getattr(part, "module", None)
        digest.update(Path(part.source).read_bytes() if module is None else weights_digest(module).encode())
    return digest.hexdigest()


def _views_description(augment: AugmentConfig) -> dict:
    return {"enabled": augment.enabled, "flip": augment.flip, "crop_padding": augment.crop_padding}


def _flops_per_image(predictor: Predictor) -> int:
    from fmnist.models import count_flops

    parts = _model_predictors(predictor)
    return sum(count_flops(part.module) for part in parts if getattr(part, "module", None) is not None)


def _read_cache(cache: Path, expected: tuple[int, int, int]) -> np.ndarray:
    """The cached logits, their header checked before their data is read: a file claiming
    another (or a huge) shape or another dtype is refused before anything of that size is
    allocated or inflated. A ValueError (or a zip/OSError) says the file is of no use."""
    with zipfile.ZipFile(cache) as archive:
        with archive.open("logits.npy") as member:
            shape, _fortran, dtype = npy_header(member)
        if shape != expected or dtype != np.dtype(np.float32):
            raise ValueError(f"{dtype} {shape}, expected float32 {expected}")
        with archive.open("logits.npy") as member:  # read_array reads the header again
            logits = np.lib.format.read_array(member, allow_pickle=False)
    if not np.isfinite(logits).all():
        raise ValueError("values that are not finite")
    return logits


def teacher_logits(
    run_root: Path,
    predictor: Predictor,
    images: torch.Tensor,
    augment: AugmentConfig,
    *,
    batch_size: int = 1024,
    weights_digest: str | None = None,
) -> tuple[np.ndarray, float, bool]:
    """(logits float32 (N, views, C), seconds spent computing them, whether they came from the
    cache) of ``predictor`` for every view of the uint8 ``images`` (N, S, S). ``weights_digest``:
    the predictor's, when the caller has it already."""
    views = view_count(augment)
    key_source = {
        "format": CACHE_FORMAT,
        "weights": weights_digest or _weights_digest(predictor),
        "images": arrays_digest(images.numpy()),
        "views": _views_description(augment),
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:32]
    cache = run_root / CACHE_FOLDER / f"{key}.npz"
    expected = (len(images), views, len(predictor.class_names))
    if cache.is_file():
        try:
            return _read_cache(cache, expected), 0.0, True
        except NPZ_READ_ERRORS as error:
            log.warning("%s: unreadable cached teacher outputs (%s); computing them again", cache, error)
    started = time.perf_counter()
    logits = np.empty(expected, dtype=np.float32)
    square = images.unsqueeze(1)  # (N, 1, S, S) uint8: views are cut as the augmentation cuts them
    for view in range(views):
        viewed = apply_view(square, augment, view)[:, 0].contiguous().numpy()
        logits[:, view] = predictor.logits(viewed, tta_flip=False, batch_size=batch_size)
    seconds = time.perf_counter() - started
    try:
        cache.parent.mkdir(exist_ok=True)
        with atomic_path(cache) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, logits=logits)
    except OSError as error:  # a read-only teacher folder: the run goes on, uncached
        log.warning("could not cache the teacher outputs in %s (%s)", cache.parent, error)
    return logits, seconds, False


def soft_targets(logits: list[np.ndarray], temperature: float) -> torch.Tensor:
    """The teachers' mean ``softmax(logits / T)``: float32 (N, views, C)."""
    total = None
    for teacher in logits:
        probabilities = torch.softmax(torch.from_numpy(teacher) / temperature, dim=-1)
        total = probabilities if total is None else total + probabilities
    return (total / len(logits)).float()


def distillation_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, *, temperature: float, weight: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``(1 - weight) * CE(labels) + weight * T^2 * KL(targets || softmax(logits / T))``.

    KL is the cross-entropy less the targets' own entropy: the same gradients, and a loss
    that reads 0 when the student matches its teachers (the logged training loss)."""
    logits = logits.float()
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    soft = F.kl_div(torch.log_softmax(logits / temperature, dim=1), targets, reduction="batchmean")
    return (1 - weight) * hard + weight * temperature**2 * soft


class DistillFeature(TrainingFeature):
    """Training on the probabilities of ``config.teachers``, mixed with the labels."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.targets: torch.Tensor | None = None
        self.cost: TeacherCost | None = None
        self.teacher_weights: list[dict] = []  # each teacher's folder and weights digest

    def check(self) -> None:
        if self.config.specialist is not None:
            raise ConfigError(
                "teachers and specialist cannot be combined",
                "distil a main run, then train a specialist on top of it",
            )

    def preflight(self) -> None:
        check_teacher_splits(self.config)

    def prepare(self, data: TrainingData) -> None:
        from fmnist.inference.predictor import load_predictor

        views = view_count(self.config.augment)
        values = len(data.train_labels) * views * len(data.class_names)
        if values > MAX_TARGET_VALUES:
            raise ConfigError(
                f"teacher outputs for {len(data.train_labels)} images x {views} views x {len(data.class_names)} classes "
                f"would need {values * 4 / 2**30:.1f} GiB",
                "use a smaller augment.crop_padding (each pixel of it multiplies the views)",
            )
        all_logits, flops, train_seconds, output_seconds, cached = [], 0, 0.0, 0.0, True
        for run in _teacher_runs(self.config):
            digest = _recorded_digest(run, "content_digest")
            if digest is not None and digest != data.description.get("content_digest"):
                raise DataError(
                    f"teacher {run.root} was trained on other data than this run's (content digest "
                    f"{digest[:12]} vs {str(data.description.get('content_digest'))[:12]})",
                    "distil with the data the teacher was trained on (--data)",
                )
            # A specialist keeps only its group's images: its base's split is the one to match.
            split_run = _base_run(run) or run
            recorded = _recorded_digest(split_run, "split_digest")
            if recorded is not None and not self.config.full and recorded != data.description.get("split_digest"):
                # The settings agreed (preflight), the images did not: e.g. another subset order.
                raise ConfigError(
                    f"teacher {run.root} trained and validated on other images than this run splits into",
                    "train the student on the teacher's data with its seed, val_fraction and subset",
                )
            predictor = load_predictor(run.root)
            self.teacher_weights.append({"run": str(run.root), "weights": _weights_digest(predictor)})
            if list(predictor.class_names) != list(data.class_names):
                raise DataError(
                    f"teacher {run.root} predicts other classes ({', '.join(predictor.class_names[:4])}...) "
                    f"than this data has ({', '.join(data.class_names[:4])}...)",
                    "use a teacher trained on this data",
                )
            log.info("teacher %s: outputs for %d images x %d views", run.root, len(data.train_labels), views)
            logits, seconds, from_cache = teacher_logits(
                run.root, predictor, data.train_images, self.config.augment, weights_digest=self.teacher_weights[-1]["weights"]
            )
            all_logits.append(logits)
            flops += _flops_per_image(predictor)
            train_seconds += sum(record.seconds or 0.0 for record in run.history())
            output_seconds += seconds
            cached = cached and from_cache
        self.targets = soft_targets(all_logits, self.config.distill_temperature)
        self.cost = TeacherCost(flops, train_seconds, output_seconds, cached, views)
        log.info(
            "teachers: %.1f MFLOPs/image, trained in %.0f s; outputs %s",
            flops / 1e6, train_seconds, "from the cache" if cached else f"computed in {output_seconds:.1f} s",
        )

    def provenance(self) -> dict:
        return {"teachers": self.teacher_weights}

    def check_resumed(self, recorded: dict) -> None:
        # A teacher trained again (or swapped) between an interruption and --resume would
        # teach the rest of the run other targets than its first epochs had.
        before = recorded.get("teachers")
        if not isinstance(before, list):
            return  # a run from before teachers were recorded
        weights = [entry.get("weights") if isinstance(entry, dict) else None for entry in before]
        for index, now in enumerate(self.teacher_weights):
            if index >= len(weights) or weights[index] != now["weights"]:
                raise RunError(
                    f"teacher {now['run']} is not the model this run started with (its weights changed since)",
                    "put the teacher run back as it was, or start the student again in a new --out folder",
                )

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, *, batch: torch.Tensor, views: torch.Tensor
    ) -> torch.Tensor | None:
        if self.targets is None:
            raise RuntimeError("DistillFeature.prepare was not called")
        targets = self.targets[batch, views].to(logits.device, non_blocking=True)
        return distillation_loss(
            logits, labels, targets, temperature=self.config.distill_temperature, weight=self.config.distill_weight,
            label_smoothing=self.config.label_smoothing,
        )

    def card(
        self, card: ModelCard, *, model: nn.Module, val_images: torch.Tensor, val_labels: torch.Tensor, folder: Path
    ) -> ModelCard:
        import dataclasses
        import os

        fields = {
            "teachers": [os.path.relpath(Path(path).resolve(), folder.resolve()) for path in self.config.teachers],
            "temperature": self.config.distill_temperature,
            "weight": self.config.distill_weight,
            **(self.cost.to_dict() if self.cost is not None else {}),
        }
        return dataclasses.replace(card, extra={**card.extra, "distilled": fields})

"""The training state saved after every epoch, so an interrupted run resumes exactly.

One safetensors file holds the weights, the optimizer's moments, the best weights so
far, the EMA weights and the random-number-generator states; one JSON document in its
metadata holds the rest (epoch, early-stopping and schedule state, history, config).
Writing is atomic, so ``kill -9`` at any moment leaves the previous epoch's checkpoint.

A checkpoint read back is checked before anything is restored from it
(``check_training_state``): every tensor a freshly built trainer would save, with the same
shape and dtype; counters within the run's range; a config equal to the run's. A damaged
or edited file is a one-line RunError, never a traceback or a silently different run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fmnist.errors import RunError
from fmnist.tensorfile import (
    flatten_tensors,
    load_tensor_file,
    restore_tensors,
    save_tensor_file,
)

STATE_FORMAT = "fmnist-training-state/1"
HISTORY_KEYS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second", "best",
)


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


def damaged_fix(path: Path) -> str:
    return f"the checkpoint is damaged: delete {path} to restart the run from its first epoch, or start a new run with --out"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def load_training_state(path: Path) -> TrainingState:
    """Read a checkpoint; a RunError (naming ``path`` and the fix) when it is not one, or
    when a part has the wrong kind (see check_training_state for shapes and ranges)."""
    tensors, document = load_tensor_file(path)
    fix = damaged_fix(path)
    if document.get("format") != STATE_FORMAT:
        raise RunError(f"{path}: not an fmnist training checkpoint", "pass the run folder to --resume")
    try:
        restored = restore_tensors(document, tensors)
    except RunError as error:
        raise RunError(f"{path}: {error.problem}", fix) from None
    kinds = {
        "epochs_done": _is_int,
        "step": _is_int,
        "model": _tensor_dict,
        "optimizer": lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list),
        "best_model": _tensor_dict,
        "ema": lambda v: v is None or _tensor_dict(v),
        "rng": _tensor_dict,
        "early_stopping": lambda v: isinstance(v, dict),
        "plateau": lambda v: isinstance(v, dict),
        "history": lambda v: isinstance(v, list),
        "config": lambda v: isinstance(v, dict),
    }
    for key, ok in kinds.items():
        if key not in restored:
            raise RunError(f"{path}: no {key!r} in the training state", fix)
        if not ok(restored[key]):
            raise RunError(f"{path}: the training state's {key!r} is malformed ({type(restored[key]).__name__})", fix)
    optimizer = restored["optimizer"]
    # JSON turned the optimizer's integer parameter ids into strings; put them back.
    if not all(isinstance(k, str) and k.isdigit() and isinstance(v, dict) for k, v in optimizer["state"].items()):
        raise RunError(f"{path}: the optimizer state is keyed by something other than parameter ids", fix)
    optimizer["state"] = {int(k): v for k, v in optimizer["state"].items()}
    return TrainingState(
        epochs_done=restored["epochs_done"],
        step=restored["step"],
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


@dataclass(frozen=True)
class ExpectedState:
    """What a checkpoint of one run must look like, taken from its freshly built trainer."""

    epochs: int  # the config's maximum
    steps_per_epoch: int
    model: dict[str, torch.Tensor]  # reference state dicts: only names, shapes, dtypes are used
    best_model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None  # None: the run has no weight average
    rng: dict[str, torch.Tensor]  # every rank's generator states
    optimizer: dict  # the fresh optimizer's state_dict (groups and hyperparameters)
    parameter_shapes: list[torch.Size]  # by optimizer parameter id
    config: dict  # the run's config as saved (to_dict)


def _check_tensors(path: Path, name: str, saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, finite: bool) -> None:
    fix = damaged_fix(path)
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + ([f"unexpected {', '.join(extra[:3])}"] if extra else [])
        raise RunError(f"{path}: the {name} tensors do not match the run's ({'; '.join(parts)})", fix)
    for key, reference in expected.items():
        value = saved[key]
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise RunError(
                f"{path}: {name} tensor {key} is {value.dtype} {tuple(value.shape)}, the run needs "
                f"{reference.dtype} {tuple(reference.shape)}",
                fix,
            )
        if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise RunError(f"{path}: {name} tensor {key} holds NaN or infinite values", fix)


def _check_optimizer(path: Path, saved: dict, expected: ExpectedState) -> None:
    fix = damaged_fix(path)
    groups, reference_groups = saved["param_groups"], expected.optimizer["param_groups"]
    if len(groups) != len(reference_groups) or not all(isinstance(group, dict) for group in groups):
        raise RunError(f"{path}: the optimizer state has {len(groups)} parameter groups, the run has {len(reference_groups)}", fix)
    for index, (group, reference) in enumerate(zip(groups, reference_groups)):
        if set(group) != set(reference):
            raise RunError(f"{path}: optimizer group {index} has settings {sorted(group)}, expected {sorted(reference)}", fix)
        if group["params"] != reference["params"]:
            raise RunError(f"{path}: optimizer group {index} holds other parameters than the run's model", fix)
        for key, value in group.items():
            want = reference[key]
            same_kind = (
                (isinstance(want, bool) and isinstance(value, bool))
                or (_is_number(want) and _is_number(value) and math.isfinite(value))
                or (want is None and value is None)
                or (isinstance(want, (list, tuple)) and isinstance(value, (list, tuple)) and len(value) == len(want)
                    and all(_is_number(v) for v in value))
                or key == "params"
            )
            if not same_kind:
                raise RunError(f"{path}: optimizer group {index} setting {key} is {value!r:.40}, expected like {want!r:.40}", fix)
    for parameter, entry in saved["state"].items():
        if not 0 <= parameter < len(expected.parameter_shapes):
            raise RunError(f"{path}: the optimizer state names parameter {parameter}, the model has {len(expected.parameter_shapes)}", fix)
        shape = expected.parameter_shapes[parameter]
        for key, value in entry.items():
            if value is None:
                continue  # SGD without momentum keeps momentum_buffer None
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise RunError(f"{path}: optimizer state {parameter}.{key} is not a floating-point tensor", fix)
            if value.shape not in (shape, torch.Size([])):
                raise RunError(
                    f"{path}: optimizer state {parameter}.{key} has shape {tuple(value.shape)}, its parameter {tuple(shape)}", fix
                )
            if not bool(torch.isfinite(value).all()):
                raise RunError(f"{path}: optimizer state {parameter}.{key} holds NaN or infinite values", fix)


def _check_counters(path: Path, state: TrainingState, expected: ExpectedState) -> None:
    fix = damaged_fix(path)
    if not 0 <= state.epochs_done <= expected.epochs:
        raise RunError(f"{path}: epochs_done is {state.epochs_done}, outside 0-{expected.epochs} (the run's epochs)", fix)
    if state.step != state.epochs_done * expected.steps_per_epoch:
        raise RunError(
            f"{path}: step is {state.step}, but {state.epochs_done} epochs of {expected.steps_per_epoch} steps make "
            f"{state.epochs_done * expected.steps_per_epoch}",
            f"resume with the data the run started with (--data); otherwise {fix}",
        )
    if len(state.history) != state.epochs_done:
        raise RunError(f"{path}: the history has {len(state.history)} epochs, epochs_done says {state.epochs_done}", fix)
    for number, record in enumerate(state.history, start=1):
        if not isinstance(record, dict) or set(record) != set(HISTORY_KEYS) or record["epoch"] != number:
            raise RunError(f"{path}: history entry {number} is malformed", fix)
        if not isinstance(record["best"], bool) or not all(
            _is_number(record[key]) or (record[key] is None and key.startswith("val_"))
            for key in HISTORY_KEYS if key != "best"
        ):
            raise RunError(f"{path}: history entry {number} holds a value of the wrong type", fix)
    stopping = state.early_stopping
    if not (
        set(stopping) == {"best_loss", "best_epoch", "bad_epochs"}
        and _is_number(stopping["best_loss"])
        and _is_int(stopping["best_epoch"])
        and (stopping["best_epoch"] == -1 or 1 <= stopping["best_epoch"] <= state.epochs_done)
        and _is_int(stopping["bad_epochs"])
        and 0 <= stopping["bad_epochs"] <= state.epochs_done
    ):
        raise RunError(f"{path}: the early-stopping state {json.dumps(stopping, default=str)[:120]} is malformed", fix)
    plateau = state.plateau
    if not (
        set(plateau) == {"scale", "best", "bad_epochs"}
        and _is_number(plateau["scale"])
        and 0 < plateau["scale"] <= 1
        and _is_number(plateau["best"])
        and _is_int(plateau["bad_epochs"])
        and plateau["bad_epochs"] >= 0
    ):
        raise RunError(f"{path}: the learning-rate plateau state {json.dumps(plateau, default=str)[:120]} is malformed", fix)


def check_training_state(path: Path, state: TrainingState, expected: ExpectedState) -> None:
    """Refuse a checkpoint that the run could not resume from exactly: a RunError naming
    ``path``, what does not fit and the fix."""
    fix = damaged_fix(path)
    # The config as JSON would hold it (tuples are lists there).
    if json.loads(json.dumps(expected.config)) != state.config:
        keys = sorted(set(expected.config) | set(state.config))
        differing = [key for key in keys if json.loads(json.dumps(expected.config.get(key))) != state.config.get(key)]
        raise RunError(
            f"{path}: saved with another config than the run's config.json (differs in {', '.join(differing[:5])})",
            "restore the run's config.json, or start a new run with --out",
        )
    saved_ranks = {key.split(".")[0] for key in state.rng}
    expected_ranks = {key.split(".")[0] for key in expected.rng}
    if saved_ranks != expected_ranks:
        raise RunError(
            f"{path}: saved by a run with {len(saved_ranks)} process(es), this one has {len(expected_ranks)}",
            "resume with the same number of processes (torchrun --nproc-per-node) as the run started with",
        )
    _check_counters(path, state, expected)
    _check_tensors(path, "model", state.model, expected.model, finite=True)
    _check_tensors(path, "best-model", state.best_model, expected.best_model, finite=True)
    if (state.ema is None) != (expected.ema is None):
        raise RunError(f"{path}: the run {'has' if expected.ema is not None else 'has no'} weight average, the checkpoint "
                       f"{'none' if state.ema is None else 'one'}", fix)
    if state.ema is not None and expected.ema is not None:
        _check_tensors(path, "weight-average", state.ema, expected.ema, finite=True)
    _check_tensors(path, "random-generator", state.rng, expected.rng, finite=False)
    _check_optimizer(path, state.optimizer, expected)

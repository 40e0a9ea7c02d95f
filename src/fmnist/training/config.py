"""Training configuration: one typed dataclass, and the typed application of settings to it.

Recipes are named instances of it (recipes.py); resolve.py applies a config file's and the
caller's settings on top. The resolved config is written into the run folder and is all a
resume needs. This module imports nothing from fmnist.training: every other part builds on it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from fmnist.augment import AugmentConfig
from fmnist.errors import ConfigError
from fmnist.models.registry import check_model_args, get_spec

OPTIMIZERS = ("adam", "adamw", "sgd", "muon")


class SettingError(ConfigError):
    """A setting as written (a config file's key, ``KEY=VALUE``) that is unknown or of the
    wrong type; the message names it as the user wrote it."""

SCHEDULES = ("constant", "plateau", "onecycle", "cosine", "triangle")


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "seed"
    model: str = "seed_cnn"
    model_args: dict = field(default_factory=dict)  # overrides of the model builder's defaults
    epochs: int = 40  # maximum; early stopping usually ends sooner
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD and Muon's other parameters only
    nesterov: bool = True  # SGD and Muon only
    # optimizer="muon" (training/optimizer.py): the convolution filters take Muon's step
    # (Nesterov momentum, the update orthogonalised, each filter bank kept at a fixed
    # norm); every other parameter takes the SGD step. muon_lr_scale: the filters' rate
    # as a multiple of the scheduled rate; muon_momentum: their momentum.
    muon_lr_scale: float = 1.0
    muon_momentum: float = 0.6
    schedule: str = "plateau"  # plateau: halve the lr after plateau_patience epochs without progress
    plateau_patience: int = 2
    warmup_fraction: float = 0.25  # onecycle, cosine, triangle: share of the steps spent rising to the peak lr
    label_smoothing: float = 0.0
    # Largest global gradient norm a step may apply (larger gradients are scaled down to
    # it); 0 disables it. The first steps of a fresh network have norms of 8-20: with a
    # high peak rate and few warm-up steps (a short --subset run) they wreck it for good.
    grad_clip: float = 0.0
    patience: int = 6  # early stopping: epochs without an improvement of select_on; 0 disables it
    min_delta: float = 1e-4  # smallest improvement of select_on that counts (loss, or accuracy as a fraction)
    # Which validation figure picks the epoch that is kept (and that patience watches):
    # "val_loss", or "val_accuracy" for label-smoothed models, whose loss stops tracking
    # accuracy late in a schedule.
    select_on: str = "val_loss"
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 disables it
    # Learning rate of the 1-D parameters (biases, BatchNorm shifts and scales) as a
    # multiple of the scheduled rate: airbench trains its BatchNorm biases 64x faster.
    bias_lr_scale: float = 1.0
    # airbench's Lookahead (training/lookahead.py): every this many steps the weights are
    # pulled back toward a slow average of themselves, and the run ends on that average;
    # 0 disables it.
    lookahead_every: int = 0
    # Selective backprop: after selective_after epochs, each step backpropagates only this
    # share of its batch, the images of highest loss; 1 trains on every image.
    selective_keep: float = 1.0
    selective_after: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = 0.1  # share of the training split held out for validation
    subset: int | None = None  # train on the first N training images (quick runs)
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None = all cores
    channels_last: bool = True  # faster convolutions on CPU (oneDNN's preferred layout)
    eval_batch_size: int = 1024
    tta_flip: bool = False  # evaluate on the image and its mirror, averaged
    # With tta_flip: also average one-pixel shifts of both (inference/tta.py). Five times
    # the passes of flip alone, so the per-epoch validation stays flip-only; calibration,
    # evaluation, predict, serve and exports use every view.
    tta_shift: bool = False
    full: bool = False  # train on train+validation with the fixed schedule (no validation, last epoch kept)
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    amp: bool = True  # bfloat16 autocast where native: CUDA, CPUs with AVX-512 BF16/AMX (precision.py)
    # Transfer learning (see training/transfer.py).
    pretrained: str | None = None  # ImageNet weights: a .safetensors/.pth file, or a named set ("imagenet", online)
    init_run: str | None = None  # start from this run's weights (names and shapes that match; the rest fresh)
    freeze_epochs: int = 0  # warm-up epochs with the backbone frozen (lr 0): only the new head learns
    backbone_lr_scale: float = 1.0  # backbone lr = scheduled lr x this (discriminative rates; e.g. 0.1)
    # Specialists (see training/specialist.py): train on one group of confusable classes only.
    specialist: str | None = None  # group name, e.g. "tops"; the model gets one output per class of the group
    base_run: str | None = None  # the run whose predictions the specialist refines
    # Knowledge distillation (training/distill.py): train on the teachers' probabilities
    # at distill_temperature, mixed with the labels; distill_weight is the teachers' share.
    teachers: tuple[str, ...] = ()  # run folders (one, or several averaged as an ensemble)
    distill_temperature: float = 4.0
    distill_weight: float = 0.7
    # The train/validation split's seed; None: the run's seed. Teachers and students (or
    # specialists and bases) that share it split the data alike, whatever their seeds.
    split_seed: int | None = None

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid setting: of the wrong type (every
        field, so a config built in code or read from a run folder is checked too), not
        finite, out of range, or inconsistent with another. The rules of optional features
        (a specialist's outputs) are checked by features.check_config, which calls this."""
        check_field_types(self)
        check_field_types(self.augment)
        get_spec(self.model)
        # Names, types and bounds of the model arguments, as the registry checks them for
        # every model: refused here, before a run folder is made.
        check_model_args(self.model, self.model_args)
        checks = [
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.select_on in ("val_loss", "val_accuracy"), "select_on", "'val_loss' or 'val_accuracy'"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            # Upper bounds far above any useful value, below float32's range (1e308 overflowed in the optimizer).
            (0 < self.lr <= 1e30, "lr", "positive, at most 1e30"),
            (0 <= self.weight_decay <= 1e30, "weight_decay", "zero or positive, at most 1e30"),
            (bool(re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", self.device)), "device", "auto, cpu, cuda or cuda:N"),
            (0 <= self.seed < 2**32, "seed", "a whole number from 0 to 4294967295"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}"),
            (0 < self.muon_lr_scale <= 1000, "muon_lr_scale", "in (0, 1000]"),
            (0 <= self.muon_momentum < 1, "muon_momentum", "in [0, 1)"),
            (self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}"),
            (self.plateau_patience >= 1, "plateau_patience", "at least 1"),
            (0 < self.warmup_fraction < 1, "warmup_fraction", "in (0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
            (self.grad_clip >= 0, "grad_clip", "zero (off) or positive"),
            (self.patience >= 0, "patience", "zero (off) or positive"),
            (0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)"),
            (0 < self.bias_lr_scale <= 1000, "bias_lr_scale", "in (0, 1000]"),
            (0 <= self.lookahead_every <= 1000, "lookahead_every", "0 (off) to 1000 steps"),
            (
                self.lookahead_every == 0 or self.ema_decay == 0,
                "lookahead_every",
                "0 when ema_decay is set (one weight average per run)",
            ),
            (0 < self.selective_keep <= 1, "selective_keep", "in (0, 1]"),
            (self.selective_after >= 0, "selective_after", "zero or positive"),
            (0 < self.val_fraction < 1, "val_fraction", "in (0, 1)"),
            (self.subset is None or self.subset >= 20, "subset", "at least 20 images"),
            (self.threads is None or self.threads >= 1, "threads", "at least 1"),
            (self.eval_batch_size >= 1, "eval_batch_size", "at least 1"),
            (not (self.full and self.patience > 0), "patience", "0 with full (no validation to stop on)"),
            (self.freeze_epochs >= 0, "freeze_epochs", "zero (off) or positive"),
            (self.backbone_lr_scale > 0, "backbone_lr_scale", "positive"),
            (self.pretrained is None or self.init_run is None, "init_run", "unset when pretrained is set (one start)"),
            ((self.specialist is None) == (self.base_run is None), "base_run", "set exactly when specialist is"),
            (0.01 <= self.distill_temperature <= 100, "distill_temperature", "in [0.01, 100] (a smaller T overflows the logits)"),
            (0 <= self.distill_weight <= 1, "distill_weight", "in [0, 1]"),
            (len(self.teachers) <= 16, "teachers", "at most 16 runs"),
            (self.split_seed is None or 0 <= self.split_seed < 2**32, "split_seed", "a whole number from 0 to 4294967295"),
            # Fashion-MNIST's shoes all face left: a model that never saw mirrored images
            # misreads them, and averaging in its answer on the mirror costs accuracy
            # (fast recipe, 2 epochs: 77% validation accuracy with the mirror pass, 91% without).
            (
                not self.tta_flip or (self.augment.enabled and self.augment.flip) or self.pretrained is not None,
                "tta_flip",
                "false when training does not flip images (augment.flip); set tta_flip false too",
            ),
            (not self.tta_shift or self.tta_flip, "tta_shift", "false when tta_flip is false (shift views come with the flip)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        self.augment.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """Coerce a config-file value to the field's type or raise ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is dict or typing.get_origin(hint) is dict:
        if isinstance(value, dict):
            return value
    elif typing.get_origin(hint) is tuple and typing.get_args(hint)[-1:] == (Ellipsis,):
        # tuple[str, ...]: a list of any length of that type (e.g. teacher run folders)
        item = typing.get_args(hint)[0]
        if isinstance(value, (list, tuple)):
            return tuple(_check_type(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    elif typing.get_origin(hint) is tuple:
        if (
            isinstance(value, (list, tuple))
            and len(value) == len(typing.get_args(hint))
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            return tuple(float(v) for v in value)
    else:
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise SettingError(f"{name} must be of type {expected}, got {value!r}")


def _field_type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` already has the type ``hint`` names (no coercion), and is finite
    when it is a number: NaN passes every ``x > 0`` check by failing none of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_field_type_ok(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict) and all(isinstance(key, str) for key in value)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return isinstance(value, tuple) and all(_field_type_ok(item, args[0]) for item in value)
    if origin is tuple:
        return (
            isinstance(value, tuple)
            and len(value) == len(args)
            and all(_field_type_ok(item, arg) for item, arg in zip(value, args))
        )
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return True


def check_field_types(config: Any) -> None:
    """Raise ConfigError for the first field of the dataclass ``config`` whose value does
    not have the declared type (or is a non-finite number)."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if not _field_type_ok(value, hints[item.name]):
            expected = getattr(hints[item.name], "__name__", str(hints[item.name]))
            raise ConfigError(f"{item.name} must be of type {expected} (finite if a number), got {value!r:.80}")


def _apply(base: Any, values: dict, where: str, prefix: str = "") -> Any:
    """``base`` (a settings dataclass) with ``values`` type-checked and applied; names in
    errors carry ``prefix`` (e.g. "augment.") for the fields of a nested table."""
    hints = typing.get_type_hints(type(base))
    names = _field_names(base)
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            valid = ", ".join(prefix + name for name in names)
            raise SettingError(f"unknown setting {prefix + key!r} in {where}", f"valid settings: {valid}")
        if dataclasses.is_dataclass(getattr(base, key)):
            if not isinstance(value, dict):
                raise SettingError(f"{prefix + key} in {where} must be a table of settings, got {value!r}")
            changes[key] = _apply(getattr(base, key), value, where, f"{prefix}{key}.")
        else:
            changes[key] = _check_type(prefix + key, value, hints[key])
    return dataclasses.replace(base, **changes)


def apply_settings(config: TrainConfig, settings: dict[str, Any], where: str) -> TrainConfig:
    """``config`` with ``settings`` applied, keyed by dotted names: ``lr``, ``augment.flip``
    (a field of a nested settings table), ``model_args.width_14`` (one key of a dict field,
    merged into its current value). Values are type-checked as a config file's are; an
    unknown name or a value of the wrong type is a ConfigError naming it and ``where``."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        head, _, rest = key.partition(".")
        if not rest:
            nested[head] = value
            continue
        current = getattr(config, head, None)
        if isinstance(current, dict):
            nested.setdefault(head, dict(current))[rest] = value
        elif dataclasses.is_dataclass(current):
            nested.setdefault(head, {})[rest] = value
        elif head in _field_names(config):
            raise SettingError(f"{head} in {where} is a single setting, not a table: use {head}=VALUE, not {key}")
        else:
            nested[head] = value  # refused by _apply, which lists the valid names
    return _apply(config, nested, where)


def parse_setting(text: str) -> tuple[str, Any]:
    """``"key=value"`` as (key, value): the value read as JSON when it is JSON (numbers,
    true/false, null, lists, objects), else kept as the text (``optimizer=sgd``)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise SettingError(f"setting {text!r} is not KEY=VALUE", "write it as e.g. epochs=5 or augment.flip=true")
    try:
        return key.strip(), json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return key.strip(), value


def _field_names(config: Any) -> list[str]:
    return [item.name for item in dataclasses.fields(config)]


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuild a config saved with to_dict (e.g. from a run folder's config.json): every
    key known, of its field's type, and the whole validated."""
    if not isinstance(values, dict):
        raise ConfigError(f"expected an object of settings, found {type(values).__name__}")
    config = _apply(TrainConfig(), values, "config.json")
    config.validate()
    return config


def dump_config(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=2) + "\n"

"""The library names settings by their parameter (``init_run``, ``val_fraction``); the
command line by its flag (``--init``, ``--val-fraction``). This module turns the first
into the second in the messages ``fmnist train`` prints: errors and logged warnings."""

from __future__ import annotations

import logging
import re

from fmnist.errors import FmnistError

# Parameter -> the train command's flag for it (the others are set with --set NAME=VALUE).
TRAIN_FLAGS = {
    "recipe": "--recipe",
    "model": "--model",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
    "threads": "--threads",
    "subset": "--subset",
    "val_fraction": "--val-fraction",
    "patience": "--patience",
    "full": "--full",
    "pretrained": "--pretrained",
    "init_run": "--init",
    "freeze_epochs": "--freeze-epochs",
    "backbone_lr_scale": "--backbone-lr-scale",
    "specialist": "--specialist",
    "base_run": "--base",
    "teachers": "--teacher",
    "distill_temperature": "--distill-temperature",
    "distill_weight": "--distill-weight",
    "run_dir": "--out",
    "data": "--data",
}
# Replaced anywhere in a message: names no sentence uses as a word. The others (model,
# seed, full, ...) only as a message's first word, where they are its subject.
_UNMISTAKABLE = sorted((name for name in TRAIN_FLAGS if "_" in name or name == "lr"), key=len, reverse=True)
_ANYWHERE = re.compile(r"(?<![\w.\-])(" + "|".join(_UNMISTAKABLE) + r")(?![\w.=\-])")
_LEADING = re.compile(r"^(\w+)(?=[\s:,]|$)")


def as_flags(text: str) -> str:
    """``text`` with the train command's parameters named by their flags."""
    text = _LEADING.sub(lambda match: TRAIN_FLAGS.get(match.group(1), match.group(1)), text, count=1)
    return _ANYWHERE.sub(lambda match: TRAIN_FLAGS[match.group(1)], text)


def error_as_flags(error: FmnistError) -> FmnistError:
    """The same error (same class, so the same exit status), speaking of flags; a setting
    the user wrote as a key (config file, --set) keeps its key."""
    from fmnist.training.config import (
        SettingError,  # loads torch: only once an error is there
    )

    if isinstance(error, SettingError):
        return error
    translated = type(error).__new__(type(error))
    FmnistError.__init__(translated, as_flags(error.problem), as_flags(error.fix) if error.fix else None)
    return translated


class FlagWording(logging.Filter):
    """A logging filter that rewords library warnings the same way."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            record.msg, record.args = as_flags(record.getMessage()), None
        return True

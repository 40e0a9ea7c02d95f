"""Resolve a run's config: the recipe's values, then a config file's, then the caller's.

``overrides`` are the values of named flags (None: left unset); ``settings`` are dotted
``key=value`` settings (``--set augment.flip=true``), applied last. The result is checked
whole, with the rules of the features it turns on (features.check_config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fmnist.training.config import TrainConfig, apply_settings
from fmnist.training.config_file import read_settings
from fmnist.training.features import check_config, resolve_features
from fmnist.training.recipes import DEFAULT_RECIPE, get_recipe


def read_config_file(path: Path) -> dict:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file of settings, in bounded
    memory and time (see fmnist.training.config_file for the bounds)."""
    return read_settings(path)


def resolve_config(
    recipe: str | None = None,
    *,
    file_values: dict | None = None,
    overrides: dict | None = None,
    settings: dict[str, Any] | None = None,
) -> TrainConfig:
    """The recipe's config, updated by the config file's values, then by ``overrides``,
    then by the dotted ``settings``; validated.

    The recipe is the one named by ``recipe``, else by the file's ``recipe`` key, else the
    default recipe. ``overrides`` with value None are flags left unset.
    """
    file_values = dict(file_values or {})
    settings = dict(settings or {})
    name = recipe or settings.pop("recipe", None) or file_values.pop("recipe", None) or DEFAULT_RECIPE
    file_values.pop("recipe", None)
    settings.pop("recipe", None)
    config = get_recipe(name)
    recipe_model = config.model
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    model_args_settings = {k: v for k, v in settings.items() if k == "model_args" or k.startswith("model_args.")}
    config = apply_settings(config, file_values, "the config file")
    config = apply_settings(config, flags, "the flags")
    config = apply_settings(config, {k: v for k, v in settings.items() if k not in model_args_settings}, "the settings")
    if config.model != recipe_model and "model_args" not in file_values and "model_args" not in flags:
        # The recipe's model arguments belong to the recipe's model (e.g. fast_cnn widths).
        config = dataclasses.replace(config, model_args={})
    config = apply_settings(config, model_args_settings, "the settings")
    config = resolve_features(config)
    check_config(config)
    return config

"""The search-space file of `fmnist tune`: the recipe every trial starts from, the settings
fixed for every trial, and the ranges or choices of the settings a study varies.

    # fast-space.yaml (TOML works too: [base] and [space] tables)
    recipe: fast                          # default: fmnist's default recipe
    base:                                 # fixed settings, as in a `fmnist train --config` file
      threads: 2
    space:
      lr: {low: 0.05, high: 1.0, log: true}          # float: log-uniform
      epochs: {low: 2, high: 8}                      # int (the setting is an integer)
      batch_size: {choices: [128, 256, 512]}         # categorical
      augment.shift_fraction: {low: 0.0, high: 0.1, step: 0.025}   # a nested setting
      model_args.width_14: {choices: [16, 32]}       # a model argument

Settings are TrainConfig's fields (``fmnist train --print-config`` shows them); nested ones
are named with dots. A trial's settings are the base section with the trial's values put in,
read exactly as `fmnist train --config` reads a file, so the best trial written out as such a
file trains the same config.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError
from fmnist.training import (
    DEFAULT_RECIPE,
    TrainConfig,
    get_recipe,
    read_config_file,
    resolve_config,
)

SECTIONS = ("recipe", "base", "space")
RANGE_KEYS = ("low", "high", "log", "step")
# Settings a study may not vary: each changes which images are held out for validation
# (so trials would be scored on different images) or removes the validation split the
# objective is measured on.
FIXED_SETTINGS = {
    "recipe": "name it at the top of the file (recipe: fast)",
    "seed": "the seed picks the validation images",
    "val_fraction": "it changes the validation images",
    "subset": "it changes the validation images",
    "full": "a full run has no validation split to score",
    "specialist": "a specialist validates on other images",
    "base_run": "it belongs with specialist",
}
SCALAR_TYPES = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Parameter:
    """One setting the study varies: a range of numbers (``kind`` int or float) or a list
    of ``choices`` (``kind`` categorical). ``name`` is dotted for nested settings."""

    name: str
    kind: str  # "int", "float" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The trial's value (an ``optuna.Trial``), sampled by the study's sampler."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(type(value) is type(choice) and value == choice for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is not None:
            steps = (value - self.low) / self.step
            return math.isclose(steps, round(steps), abs_tol=1e-9)
        return True

    def extremes(self) -> list:
        """The values checked against the config's rules before a study starts."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step:g}" if self.step else "")
        return f"{self.name} in [{self.low:g}, {self.high:g}]{scale}"


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    recipe: str
    base: dict  # the base section as written (nested like a config file)
    parameters: tuple[Parameter, ...]

    def settings(self, values: dict[str, Any]) -> dict:
        """The config-file settings of a trial: ``recipe``, the base section, and
        ``values`` (dotted name -> value) put in at their places."""
        settings = copy.deepcopy(self.base)
        for name, value in values.items():
            group, _, key = name.partition(".")
            if not key:
                settings[group] = value
                continue
            if group == "model_args" and "model_args" not in settings:
                # A file's model_args replace the recipe's whole: start from the recipe's
                # own (e.g. fast_cnn's widths) while the model is the recipe's.
                recipe = get_recipe(self.recipe)
                same_model = settings.get("model", recipe.model) == recipe.model
                settings["model_args"] = dict(recipe.model_args) if same_model else {}
            settings.setdefault(group, {})[key] = value
        return {"recipe": self.recipe, **settings}

    def config(self, values: dict[str, Any]) -> TrainConfig:
        """The validated TrainConfig of a trial; ConfigError naming the file if refused."""
        settings = self.settings(values)
        settings.pop("recipe")
        try:
            return resolve_config(self.recipe, file_values=settings)
        except ConfigError as error:
            shown = ", ".join(f"{name}={value!r}" for name, value in values.items())
            where = f" with {shown}" if shown else ""
            raise ConfigError(f"{self.path}{where}: {error.problem}", error.fix) from None

    def base_values(self) -> dict[str, Any]:
        """Each parameter's value in the base config (the recipe plus the base section):
        what a baseline trial runs."""
        config = self.config({}).to_dict()
        values = {}
        for parameter in self.parameters:
            group, _, key = parameter.name.partition(".")
            value = config[group][key] if key else config[group]
            if key and key not in config[group]:
                raise ConfigError(
                    f"{self.path}: the base config has no value for {parameter.name}, so there is no baseline trial",
                    f"set {parameter.name} in the base section, or leave out --baseline",
                )
            if not parameter.contains(value):
                raise ConfigError(
                    f"{self.path}: the base config's {parameter.name} = {value!r} is outside its search space "
                    f"({parameter.describe()}), so the baseline trial cannot run it",
                    "widen the range, or leave out --baseline",
                )
            values[parameter.name] = value
        return values

    def describe(self) -> dict:
        """Plain data that identifies the space (stored with a study, compared on joining)."""
        document = {
            "recipe": self.recipe,
            "base": self.base,
            "space": {p.name: dataclasses.asdict(p) for p in self.parameters},
        }
        return json.loads(json.dumps(document))


def read_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space file (YAML or TOML): every name a setting that may
    vary, every range well formed, and the base config valid with each end of each range
    and each choice. ConfigError naming the file and the entry otherwise."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such search-space file", "check the path")
    document = read_config_file(path)
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section {unknown[0]!r}",
            "a search-space file holds recipe, base and space; settings go under base",
        )
    recipe = document.get("recipe", DEFAULT_RECIPE)
    if not isinstance(recipe, str):
        raise ConfigError(f"{path}: recipe must be a recipe name, got {recipe!r}")
    try:
        get_recipe(recipe)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error.problem}", error.fix) from None
    base = document.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base must be a table of settings, got {base!r}")
    if "recipe" in base:
        raise ConfigError(f"{path}: recipe belongs at the top of the file, not under base")
    entries = _flatten(document.get("space"), path)
    if not entries:
        raise ConfigError(f"{path}: no space section, or an empty one", "add e.g. space: {lr: {low: 0.01, high: 1, log: true}}")
    parameters = tuple(_parameter(name, spec, path) for name, spec in entries.items())
    space = SearchSpace(path=path, recipe=recipe, base=base, parameters=parameters)
    base_config = space.config({})
    if base_config.full:
        raise ConfigError(f"{path}: base sets full, which leaves no validation split to tune on", "remove it")
    for parameter in parameters:
        for value in parameter.extremes():
            try:
                space.config({parameter.name: value})
            except ConfigError as error:
                raise ConfigError(f"{path}: space {parameter.name}: {value!r} is refused ({error.problem.split(': ', 1)[-1]})", error.fix) from None
    return space


def _flatten(section: Any, path: Path, prefix: str = "") -> dict[str, dict]:
    """Dotted name -> spec. Nested tables are groups (TOML's ``augment.flip = {...}`` key
    is a table ``augment`` holding ``flip``) until a table of range or choice keys."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: space{' ' + prefix if prefix else ''} must be a table, got {section!r}")
    entries: dict[str, dict] = {}
    for key, value in section.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and not (set(value) & {"choices", *RANGE_KEYS}):
            entries.update(_flatten(value, path, name))
        else:
            entries[name] = value
    return entries


def _setting_type(name: str, path: Path) -> Any:
    """The declared type of a dotted setting (None for a model argument: its builder
    checks it), or ConfigError naming what is wrong."""
    head, *rest = name.split(".")
    hints = typing.get_type_hints(TrainConfig)
    if head not in hints:
        names = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
        raise ConfigError(f"{path}: space {name}: unknown setting {head!r}", f"valid settings: {names}")
    if head in FIXED_SETTINGS:
        raise ConfigError(f"{path}: space {name}: {head} cannot vary in a search", FIXED_SETTINGS[head])
    hint = hints[head]
    if head == "model_args":
        if len(rest) != 1:
            raise ConfigError(f"{path}: space {name}: name one model argument", "e.g. model_args.width_14")
        return None
    if dataclasses.is_dataclass(hint):
        fields = {f.name for f in dataclasses.fields(hint)}
        if len(rest) != 1 or rest[0] not in fields:
            raise ConfigError(f"{path}: space {name}: name one of {head}'s settings", f"one of: {', '.join(sorted(fields))}")
        hint = typing.get_type_hints(hint)[rest[0]]
    elif rest:
        raise ConfigError(f"{path}: space {name}: {head} has no settings below it", f"name it {head}")
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parameter(name: str, spec: Any, path: Path) -> Parameter:
    where = f"{path}: space {name}"
    hint = _setting_type(name, path)
    example = "{low: 0.001, high: 0.1, log: true} or {choices: [a, b]}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a range or choices, got {spec!r}", f"write e.g. {example}")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(f"{where}: choices go alone, without {', '.join(sorted(set(spec) - {'choices'}))}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if not all(isinstance(choice, SCALAR_TYPES) for choice in choices):
            raise ConfigError(f"{where}: each choice must be a number, a string, true/false or null, got {choices!r}")
        if len({json.dumps(choice) for choice in choices}) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value: {choices!r}")
        return Parameter(name, "categorical", choices=tuple(choices))
    unknown = sorted(set(spec) - set(RANGE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", "a range has low, high and optionally log or step; or give choices")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs low and high", f"write e.g. {example}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if hint is not None and hint not in (int, float):
        raise ConfigError(f"{where}: a {getattr(hint, '__name__', hint)} setting takes choices, not a range", "write {choices: [...]}")
    if not (_number(low) and _number(high)) or not low < high:
        raise ConfigError(f"{where}: low and high must be numbers with low < high, got {low!r} and {high!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if step is not None and not (_number(step) and step > 0):
        raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
    if log and step is not None:
        raise ConfigError(f"{where}: log and step cannot go together", "drop one of them")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low!r}")
    integers = all(isinstance(v, int) for v in (low, high, step if step is not None else 1))
    if hint is int and not integers:
        raise ConfigError(f"{where}: {name} is a whole number: low, high and step must be integers, got {low!r}, {high!r}, {step!r}")
    kind = "int" if hint is int or (hint is None and integers) else "float"
    if kind == "float":
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    return Parameter(name, kind, low=low, high=high, log=log, step=step)

"""Build models by name: ``@register_model`` adds a builder, ``create_model`` calls it.

Every model takes the contract's input (float32 (N, 1, 28, 28) in [0, 1]) and returns
class logits (N, num_classes); normalisation is its first layer.

Model arguments come from config files, flags and model files, so they are checked here,
once, for every model: each must have its default's type, and numbers must lie within
bounds, declared on the builder's signature (``width: Annotated[int, Bounds(1, 1024)] = 32``)
or, when none are declared, the defaults below. The model is then built on the meta device
(no memory for weights) and refused above MAX_MODEL_ELEMENTS before it is built for real.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from fmnist.data.contract import CONTRACT
from fmnist.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]

# Parameters plus buffers: 100M float32 values are 400 MB. The largest registered
# models at their defaults hold 11M (resnet18).
MAX_MODEL_ELEMENTS = 100_000_000


@dataclass(frozen=True)
class Bounds:
    """Inclusive range of a numeric model argument (of each element, for a tuple)."""

    low: float
    high: float
    unit: str = ""  # what the number counts, for messages: "pixels", "channels"

    def describe(self) -> str:
        return f"{' of ' + self.unit if self.unit else ''} >= {self.low:g} and <= {self.high:g}"


# For arguments whose builder declares no Bounds: generous, but finite, so a new model
# gets a check for free (its size is also capped by MAX_MODEL_ELEMENTS).
DEFAULT_INT_BOUNDS = Bounds(0, 4096)
DEFAULT_FLOAT_BOUNDS = Bounds(-1e6, 1e6)
MAX_STRING_ARGUMENT = 100  # characters
MAX_TUPLE_ARGUMENT = 64  # elements of a variable-length tuple argument
# Shared by the builders: a head of 2 to 1,000 classes; a probability such as dropout.
CLASSES = Bounds(2, 1000, "classes")
FRACTION = Bounds(0, 1)


@dataclass(frozen=True)
class Argument:
    """One keyword argument of a builder, as its signature declares it."""

    name: str
    kind: type  # int, float, bool, str or tuple
    default: Any
    bounds: Bounds | None = None  # for int and float, and tuple elements
    element: type | None = None  # a tuple's element type
    length: int | None = None  # a tuple's fixed length (None: any, up to MAX_TUPLE_ARGUMENT)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: ModelBuilder
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register ``builder`` under its function name; its docstring's first line describes it."""
    doc = inspect.getdoc(builder) or ""
    _REGISTRY[builder.__name__] = ModelSpec(builder.__name__, builder, doc.splitlines()[0] if doc else "")
    return builder


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}", f"choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_defaults(name: str) -> dict:
    """The builder's keyword arguments and their defaults."""
    signature = inspect.signature(get_spec(name).builder)
    return {key: param.default for key, param in signature.parameters.items() if param.default is not param.empty}


def model_arguments(name: str) -> dict[str, Argument]:
    """The builder's keyword arguments with their types and bounds (see the module docstring)."""
    builder = get_spec(name).builder
    hints = typing.get_type_hints(builder, include_extras=True)
    arguments = {}
    for key, default in model_defaults(name).items():
        hint, bounds = hints.get(key), None
        if typing.get_origin(hint) is Annotated:
            hint, *extras = typing.get_args(hint)
            bounds = next((extra for extra in extras if isinstance(extra, Bounds)), None)
        kind = typing.get_origin(hint) or hint
        if kind not in (int, float, bool, str, tuple):
            kind = type(default)  # unannotated: the default's type
        element, length = None, None
        if kind is tuple:
            parts = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
            if len(parts) == 2 and parts[1] is Ellipsis:
                element = parts[0]
            elif parts:
                element, length = parts[0], len(parts)
            else:
                element, length = (type(default[0]) if default else int), len(default)
        number = element if kind is tuple else kind
        if bounds is None and number in (int, float):
            bounds = DEFAULT_INT_BOUNDS if number is int else DEFAULT_FLOAT_BOUNDS
        arguments[key] = Argument(key, kind, default, bounds, element, length)
    return arguments


def _check_number(model: str, argument: Argument, value: object, kind: type, where: str) -> int | float:
    """``value`` as a number of ``kind`` within the argument's bounds, or ConfigError."""
    bounds = argument.bounds
    shown = repr(value)[:40]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number"
    if not ok or (bounds is not None and not bounds.low <= value <= bounds.high):
        raise ConfigError(
            f"model {model!r}: {where} must be {expected}{bounds.describe() if bounds else ''}, got {shown}",
            f"the default is {argument.default!r}",
        )
    return value if kind is int else float(value)


def check_model_args(name: str, arguments: dict) -> dict:
    """``arguments`` checked against model ``name``'s builder: known names, the declared
    types, numbers within bounds. Returns them ready for the builder (tuples for lists)."""
    declared = model_arguments(name)
    unknown = sorted(str(key)[:40] for key in arguments if key not in declared)
    if unknown:
        raise ConfigError(
            f"model {name!r} has no argument(s) {', '.join(unknown)}",
            f"valid: {', '.join(sorted(declared)) or 'none'}",
        )
    checked: dict[str, Any] = {}
    for key, value in arguments.items():
        argument = declared[key]
        if argument.kind in (int, float):
            checked[key] = _check_number(name, argument, value, argument.kind, key)
        elif argument.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"model {name!r}: {key} must be true or false, got {repr(value)[:40]}", f"the default is {argument.default!r}")
            checked[key] = value
        elif argument.kind is str:
            if not isinstance(value, str) or len(value) > MAX_STRING_ARGUMENT:
                raise ConfigError(f"model {name!r}: {key} must be a string of at most {MAX_STRING_ARGUMENT} characters", f"the default is {argument.default!r}")
            checked[key] = value
        elif argument.kind is tuple:
            length = argument.length
            if not isinstance(value, (list, tuple)) or (len(value) != length if length is not None else len(value) > MAX_TUPLE_ARGUMENT):
                count = f"{length}" if length is not None else f"at most {MAX_TUPLE_ARGUMENT}"
                raise ConfigError(f"model {name!r}: {key} must be a list of {count} numbers, got {repr(value)[:40]}", f"the default is {list(argument.default)!r}")
            element = argument.element if argument.element in (int, float) else int
            checked[key] = tuple(_check_number(name, argument, item, element, f"{key}[{index}]") for index, item in enumerate(value))
        else:  # a builder argument of another type: passed through, unchecked
            checked[key] = value
    return checked


def model_elements(module: nn.Module) -> int:
    """Parameters plus buffers (works on meta modules: no memory is touched)."""
    return sum(tensor.numel() for tensor in module.state_dict().values())


def create_meta_model(name: str, **overrides: object) -> nn.Module:
    """Model ``name`` built on the meta device (shapes and dtypes, no data), after the
    arguments are checked; refused when it would hold more than MAX_MODEL_ELEMENTS."""
    spec = get_spec(name)
    arguments = check_model_args(name, overrides)
    with torch.device("meta"):
        module = spec.builder(**arguments)
    elements = model_elements(module)
    if elements > MAX_MODEL_ELEMENTS:
        raise ConfigError(
            f"model {name!r} with {str(overrides)[:120]} would hold {elements:,} values, more than the {MAX_MODEL_ELEMENTS:,} allowed",
            "use smaller model arguments",
        )
    return module


def output_width(module: nn.Module) -> int:
    """Logits per image of ``module`` (a meta module works: nothing is computed)."""
    was_training = module.training
    module.eval()
    device = next(iter(module.state_dict().values())).device
    sample = torch.empty(2, CONTRACT.channels, CONTRACT.image_size, CONTRACT.image_size, device=device)
    with torch.no_grad():
        logits = module(sample)
    module.train(was_training)
    return int(logits.shape[-1])


def create_model(name: str, **overrides: object) -> nn.Module:
    """Build model ``name``; ``overrides`` replace the builder's default arguments.

    Raises ConfigError for an unknown argument, a value of the wrong type or outside its
    bounds, or a model larger than MAX_MODEL_ELEMENTS (checked on the meta device first).
    """
    create_meta_model(name, **overrides)
    return get_spec(name).builder(**check_model_args(name, overrides))


class Normalize(nn.Module):
    """Subtract the dataset mean and divide by its std (fixed buffers, saved with the model)."""

    def __init__(self, mean: float = CONTRACT.mean, std: float = CONTRACT.std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module) -> int:
    """FLOPs of one forward pass of one image (a multiply-add counts as 2), via torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, CONTRACT.channels, CONTRACT.image_size, CONTRACT.image_size))
    model.train(was_training)
    return int(counter.get_total_flops())

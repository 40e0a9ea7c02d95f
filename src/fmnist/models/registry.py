"""Build models by name: ``@register_model`` adds a builder, ``create_model`` calls it.

Every model takes the contract's input (float32 (N, 1, 28, 28) in [0, 1]) and returns
class logits (N, 10); normalisation is its first layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fmnist.data.contract import CONTRACT
from fmnist.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]


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


def create_model(name: str, **overrides: object) -> nn.Module:
    """Build model ``name``; ``overrides`` replace the builder's default arguments."""
    spec = get_spec(name)
    defaults = model_defaults(name)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no argument(s) {', '.join(unknown)}",
            f"valid: {', '.join(sorted(defaults)) or 'none'}",
        )
    return spec.builder(**overrides)


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

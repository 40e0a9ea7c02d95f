"""Named training recipes. Each is a TrainConfig; flags and config files override it."""

from __future__ import annotations

from fmnist.augment import AugmentConfig
from fmnist.errors import ConfigError
from fmnist.training.config import TrainConfig

RECIPES: dict[str, TrainConfig] = {
    # The original notebook: the seed CNN, Adam, small rotations and shifts, early
    # stopping on validation loss, learning rate halved on plateaus.
    "seed": TrainConfig(
        recipe="seed",
        model="seed_cnn",
        epochs=40,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        schedule="plateau",
        patience=6,
        augment=AugmentConfig(rotate_degrees=10.0, shift_fraction=0.1),
    ),
}
DEFAULT_RECIPE = "seed"


def list_recipes() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> TrainConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}", f"choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]

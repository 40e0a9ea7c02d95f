"""Which optional features (training/hooks.py) a config turns on, and the checks they add."""

from __future__ import annotations

from fmnist.training.config import TrainConfig
from fmnist.training.distill import DistillFeature
from fmnist.training.hooks import TrainingFeature
from fmnist.training.specialist import SpecialistFeature
from fmnist.training.transfer import TransferFeature


def features_for(config: TrainConfig) -> list[TrainingFeature]:
    """The features ``config`` uses, in the order their hooks run."""
    features: list[TrainingFeature] = []
    if config.pretrained is not None or config.init_run is not None:
        features.append(TransferFeature(config))
    if config.specialist is not None:
        features.append(SpecialistFeature(config))
    if config.teachers:
        features.append(DistillFeature(config))
    return features


def resolve_features(config: TrainConfig) -> TrainConfig:
    """``config`` with the settings its features derive (e.g. a specialist's outputs)."""
    for feature in features_for(config):
        config = feature.resolve(config)
    return config


def check_config(config: TrainConfig) -> None:
    """Validate ``config``: each setting (TrainConfig.validate), then each feature's rules."""
    config.validate()
    for feature in features_for(config):
        feature.check()

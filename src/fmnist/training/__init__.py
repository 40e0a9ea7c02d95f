"""Training: one loop for every recipe, resumable checkpoints, early stopping.

``train``/``resume`` train a run folder; ``fmnist.pipeline.run_pipeline`` also calibrates,
evaluates and reports it, as ``fmnist train`` does.
"""

from fmnist.training.config import TrainConfig, config_from_dict
from fmnist.training.events import EpochEnd, StopTraining
from fmnist.training.loop import TrainResult, resume, train
from fmnist.training.recipes import DEFAULT_RECIPE, RECIPES, get_recipe, list_recipes
from fmnist.training.resolve import read_config_file, resolve_config
from fmnist.training.run_folder import RunPaths, default_run_dir

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "EpochEnd",
    "RunPaths",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "default_run_dir",
    "get_recipe",
    "list_recipes",
    "read_config_file",
    "resolve_config",
    "resume",
    "train",
]

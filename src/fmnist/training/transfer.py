"""Transfer learning in the training loop: the starting weights (``pretrained``,
``init_run``) and the parameter groups for a frozen warm-up and discriminative learning rates.
``TransferFeature`` is how a run that starts from such weights joins the loop (training/hooks.py).

The backbone is every parameter but the classifier head (the model's last Linear layer).
"Frozen" means a learning rate of 0 for the backbone's groups during the first
``freeze_epochs`` epochs: the gradients are still computed, but the schedule alone decides
what moves, so resuming stays exact and data-parallel runs need no special case.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fmnist.errors import ConfigError, RunError
from fmnist.models.pretrained import WeightTransfer, load_pretrained, load_run_weights
from fmnist.training.config import TrainConfig
from fmnist.training.hooks import TrainingFeature

if TYPE_CHECKING:
    from fmnist.models import ModelCard

log = logging.getLogger(__name__)


def initialise_weights(model: nn.Module, config: TrainConfig) -> WeightTransfer | None:
    """Copy the configured starting weights into ``model`` (before it is trained)."""
    if config.pretrained is not None:
        transfer = load_pretrained(model, config.model, config.pretrained)
    elif config.init_run is not None:
        transfer = load_run_weights(model, config.init_run)
    else:
        return None
    log.info("starting weights from %s", transfer.summary())
    return transfer


def check_start(config: TrainConfig) -> None:
    """Refuse a missing or unusable start (``pretrained``, ``init_run``) before any data is read."""
    from fmnist.models.imagenet import IMAGENET_MODELS
    from fmnist.models.pretrained import looks_like_file
    from fmnist.models.saved import resolve_model_path

    if config.pretrained is not None:
        if config.model not in IMAGENET_MODELS:
            raise ConfigError(
                f"pretrained needs an ImageNet backbone; {config.model} has none",
                f"use model {' or '.join(IMAGENET_MODELS)} (or init_run, to start from one of your runs)",
            )
        if looks_like_file(config.pretrained) and not Path(config.pretrained).expanduser().is_file():
            raise ConfigError(f"pretrained {config.pretrained}: no such weights file", "check the path")
    if config.init_run is not None:
        try:
            resolve_model_path(config.init_run)
        except RunError as error:
            raise RunError(f"init_run: {error.problem}", error.fix) from None


def uses_parameter_groups(config: TrainConfig) -> bool:
    return config.freeze_epochs > 0 or config.backbone_lr_scale != 1.0


def head_parameter_ids(model: nn.Module) -> set[int]:
    """The parameters of the classifier head: the last Linear layer in module order."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return {id(p) for p in linears[-1].parameters()} if linears else set()


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Optimizer groups: weights decayed, biases and norms not (1-D tensors), and with
    transfer settings each split into backbone and head so their rates can differ."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    parts = [(trainable, False)]
    if uses_parameter_groups(config):
        head = head_parameter_ids(model)
        parts = [([p for p in trainable if id(p) not in head], True), ([p for p in trainable if id(p) in head], False)]
    groups = []
    for params, backbone in parts:
        for decayed in (True, False):
            group = {
                "params": [p for p in params if (p.ndim > 1) == decayed],
                "weight_decay": config.weight_decay if decayed else 0.0,
            }
            if decayed and config.optimizer == "muon":
                # The convolution filters take Muon's step (optimizer.py), undecayed: it
                # keeps their norm fixed instead. Only with Muon, as bias_lr_scale below.
                groups.append(
                    {
                        "params": [p for p in group["params"] if p.ndim == 4],
                        "weight_decay": 0.0,
                        "momentum": config.muon_momentum,
                        "orthogonal": True,
                        **({"backbone": backbone} if uses_parameter_groups(config) else {}),
                    }
                )
                group["params"] = [p for p in group["params"] if p.ndim != 4]
            if uses_parameter_groups(config):
                group["backbone"] = backbone
            if config.bias_lr_scale != 1.0:  # only then, so other runs' checkpoints keep their layout
                group["one_dim"] = not decayed
            groups.append(group)
    return groups


def lr_scale(group: dict, config: TrainConfig, epochs_done: int) -> float:
    """The share of the scheduled learning rate that ``group`` gets in epoch ``epochs_done + 1``:
    the backbone's transfer share, times ``bias_lr_scale`` for biases and norms or
    ``muon_lr_scale`` for Muon's filters."""
    scale = config.bias_lr_scale if group.get("one_dim", False) else 1.0
    if group.get("orthogonal", False):
        scale = config.muon_lr_scale
    if not group.get("backbone", False):
        return scale
    return scale * (0.0 if epochs_done < config.freeze_epochs else config.backbone_lr_scale)


def start_name(start: str | os.PathLike[str]) -> str:
    """How a model card names the weights a run started from (``pretrained``, ``init_run``):
    a named set as it is, a file or run folder by its name only (no machine path)."""
    return Path(start).name or str(start)


class TransferFeature(TrainingFeature):
    """A run that starts from other weights: ImageNet (``pretrained``) or a run (``init_run``)."""

    def preflight(self) -> None:
        check_start(self.config)

    def initialise(self, model: nn.Module) -> None:
        initialise_weights(model, self.config)

    def card(
        self, card: ModelCard, *, model: nn.Module, val_images: torch.Tensor, val_labels: torch.Tensor, folder: Path
    ) -> ModelCard:
        start = start_name(self.config.pretrained or self.config.init_run)
        return dataclasses.replace(card, extra={**card.extra, "initialised_from": start})

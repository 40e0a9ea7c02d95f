"""The optimizer of a run and the learning rate of each of its steps."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.training.config import TrainConfig
from fmnist.training.schedule import scheduled_lr
from fmnist.training.transfer import lr_scale, parameter_groups


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters (1-D tensors): decaying them only
    # fights the normalisation. Transfer settings split backbone and head (transfer.py).
    groups = parameter_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def set_learning_rate(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, step: int, total_steps: int, scale: float, epochs_done: int
) -> float:
    """Set every parameter group's rate for ``step`` (0-based) of ``total_steps``: the
    schedule's, times ``scale`` (the plateau scaler's), times the group's transfer share
    (0 for a frozen backbone). Returns the scheduled rate before the group's share."""
    lr = scheduled_lr(
        config.schedule, peak=config.lr, step=step, total_steps=total_steps, warmup_fraction=config.warmup_fraction
    ) * scale
    for group in optimizer.param_groups:
        group["lr"] = lr * lr_scale(group, config, epochs_done)
    return lr


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    full, rest = divmod(num_images, batch_size)
    # A final batch of one image is dropped: BatchNorm cannot normalise it.
    return full + (1 if rest > 1 else 0)

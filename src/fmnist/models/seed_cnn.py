"""The original notebook's CNN: two Conv-BN-LeakyReLU pairs per stage, max-pool, dropout.

28x28 -> [conv32, conv32] -> pool -> 14x14 -> [conv64, conv64] -> pool -> 7x7 -> dense 128 -> 10
"""

from __future__ import annotations

from typing import Annotated

from torch import nn

from fmnist.models.registry import CLASSES, FRACTION, Bounds, Normalize, register_model


def conv_bn_act(in_channels: int, out_channels: int, slope: float) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(slope),
    ]


@register_model
def seed_cnn(
    width: Annotated[int, Bounds(1, 1024, "channels")] = 32,
    hidden: Annotated[int, Bounds(1, 8192, "units")] = 128,
    dropout: Annotated[float, FRACTION] = 0.25,
    head_dropout: Annotated[float, FRACTION] = 0.5,
    slope: Annotated[float, FRACTION] = 0.1,
    num_classes: Annotated[int, CLASSES] = 10,
) -> nn.Module:
    """The original CNN: Conv-BN-LeakyReLU blocks, max-pooling, dropout, dense head."""
    return nn.Sequential(
        Normalize(),
        *conv_bn_act(1, width, slope),
        *conv_bn_act(width, width, slope),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
        *conv_bn_act(width, 2 * width, slope),
        *conv_bn_act(2 * width, 2 * width, slope),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(2 * width * 7 * 7, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.LeakyReLU(slope),
        nn.Dropout(head_dropout),
        nn.Linear(hidden, num_classes),
    )

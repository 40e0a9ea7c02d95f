"""Pre-activation residual networks (He et al. 2016, "Identity Mappings in Deep Residual
Networks"), in the wide form of Zagoruyko & Komodakis (2016): three stages at 28x28,
14x14 and 7x7 with widths w, 2w, 4w, each a stack of two-conv residual blocks.

``preact_resnet`` is the family; its defaults are what the `best` recipe trains.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from fmnist.models.registry import CLASSES, FRACTION, Bounds, Normalize, register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv, BN-ReLU-conv, plus the identity (or a 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.bn1(x))
        # The projection sees the activated input, as in the pre-activation paper.
        residual = self.shortcut(activated) if self.shortcut is not None else x
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + residual


class PreActResNet(nn.Module):
    def __init__(self, width: int, blocks: tuple[int, int, int], dropout: float, num_classes: int = 10) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.normalize = Normalize()
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_channels = widths[0]
        for stage, (channels, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(PreActBlock(in_channels, channels, stride, dropout))
                in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(in_channels)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(self.normalize(images)))
        features = torch.relu(self.final_bn(features))
        return self.head(features.mean(dim=(2, 3)))


@register_model
def preact_resnet(
    width: Annotated[int, Bounds(1, 512, "channels")] = 32,
    blocks: Annotated[tuple[int, int, int], Bounds(1, 16, "blocks per stage")] = (1, 1, 1),
    dropout: Annotated[float, FRACTION] = 0.0,
    num_classes: Annotated[int, CLASSES] = 10,
) -> nn.Module:
    """Pre-activation wide ResNet, stages at 28/14/7 px with widths w, 2w, 4w."""
    return PreActResNet(width, tuple(blocks), dropout, num_classes)

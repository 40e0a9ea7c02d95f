"""ImageNet backbones for transfer learning: torchvision's ResNet-18 and MobileNetV2,
written with torch.nn under torchvision's parameter names, so torchvision (and timm)
weight files load into them unchanged.

Each is wrapped in ``ImageNetClassifier``, which turns the contract's input (float32
(N, 1, 28, 28) in [0, 1]) into what the backbone was pretrained on:
- upsampling 28 -> ``image_size`` px (bilinear): ImageNet features are tuned to larger
  objects, and the stride-32 backbones would leave a 1x1 map at 28 px;
- 1 -> 3 channels by repeating the grey channel. A grey image repeated three times is
  exactly what the pretrained network sees when shown a grey photo, so the first conv's
  pretrained weights are used as they are (the alternative, summing them over RGB, is
  3x cheaper in the first layer but needs the per-channel normalisation folded in);
- ImageNet's per-channel mean and std.
The ImageNet classifier (1000 classes) is replaced by a fresh one of ``num_classes``.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.models.registry import CLASSES, FRACTION, Bounds, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MODELS = ("resnet18", "mobilenet_v2")  # the registered builders below


# -- ResNet-18 (torchvision.models.resnet18) ----------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (channels, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            stride = 1 if index == 1 else 2
            layer = [BasicBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1) for i in range(count)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            in_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- MobileNetV2 (torchvision.models.mobilenet_v2) ----------------------------------------
def conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation with ReLU6: keys 0 (conv), 1 (bn)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # linear bottleneck
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper's table 2.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 32, stride=2)]
        in_channels = 32
        for expand, channels, repeats, stride in MOBILENET_V2_STAGES:
            for index in range(repeats):
                layers.append(InvertedResidual(in_channels, channels, stride if index == 0 else 1, expand))
                in_channels = channels
        layers.append(conv_bn_relu6(in_channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# -- the wrapper ---------------------------------------------------------------------------
class ImageNetClassifier(nn.Module):
    """Contract input -> upsampled, 3-channel, ImageNet-normalised -> ``backbone``.

    ``pretrained_prefix`` says where a torchvision state dict's keys go in this module's
    state dict; ``head`` names the backbone's classifier, which pretrained weights skip.
    """

    pretrained_prefix = "backbone."

    def __init__(self, backbone: nn.Module, head: str, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.head_name = head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        images = images.expand(-1, 3, -1, -1)  # (N, 1, S, S) -> (N, 3, S, S), no copy
        return self.backbone((images - self.mean) / self.std)


# 32 px: the stride-32 backbones keep a 1x1 map; 224 px: ImageNet's own size. Beyond it
# a batch of 1024 images would need tens of GB of activations.
IMAGE_SIZE = Bounds(32, 224, "pixels")


@register_model
def resnet18(image_size: Annotated[int, IMAGE_SIZE] = 64, num_classes: Annotated[int, CLASSES] = 10) -> nn.Module:
    """torchvision's ResNet-18 on upsampled 3-channel input, for ImageNet fine-tuning."""
    return ImageNetClassifier(ResNet((2, 2, 2, 2), num_classes), head="fc", image_size=image_size)


@register_model
def mobilenet_v2(
    image_size: Annotated[int, IMAGE_SIZE] = 64,
    num_classes: Annotated[int, CLASSES] = 10,
    dropout: Annotated[float, FRACTION] = 0.2,
) -> nn.Module:
    """torchvision's MobileNetV2 (3.5M parameters) on upsampled input, for ImageNet fine-tuning."""
    return ImageNetClassifier(MobileNetV2(num_classes, dropout), head="classifier", image_size=image_size)

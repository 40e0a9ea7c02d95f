"""Saliency maps: which pixels a prediction rests on.

- Grad-CAM (Selvaraju et al., 2017) for models with convolutions: the rectified output of
  the last convolution block (the last Conv2d through its BatchNorm and activation),
  weighted by the spatial mean of the class score's gradient, rectified and
  upsampled to 28x28. One forward and one backward pass per batch.
- Occlusion, model-agnostic: slide a patch of background (0, black) over the image and
  record how much the class probability drops. 28x28 images make this cheap
  (with patch 6 and stride 2: 144 forward passes per image).

Both return float32 maps (N, 28, 28) scaled to [0, 1] per image (all zeros when the
model's score does not depend on the image at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmnist.data.contract import to_model_input
from fmnist.errors import ConfigError
from fmnist.inference.predictor import TorchPredictor, check_images
from fmnist.models import LoadedModel

METHODS = ("gradcam", "occlusion")


def last_conv(module: nn.Module) -> nn.Conv2d | None:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """Scale each map (N, H, W) to [0, 1]."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp_min(1e-12)
    return scaled.reshape(maps.shape).float().numpy()


def _targets(logits: torch.Tensor, targets: np.ndarray | None) -> torch.Tensor:
    if targets is None:
        return logits.argmax(dim=1)
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)


# Layers that keep the feature map's shape and act per element or per channel: Grad-CAM
# looks through them to the rectified output of the last convolution block.
ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Identity)


def _last_block_output(calls: list[tuple[nn.Module, torch.Tensor]]) -> torch.Tensor:
    """From (leaf module, output) pairs in execution order: the output of the last Conv2d,
    carried through the BatchNorm/activation layers that directly follow it. Grad-CAM wants
    the rectified activations; a conv's raw output, before its BatchNorm shift, is not."""
    position = max(i for i, (module, _) in enumerate(calls) if isinstance(module, nn.Conv2d))
    while (
        position + 1 < len(calls)
        and isinstance(calls[position + 1][0], ELEMENTWISE)
        and calls[position + 1][1].shape == calls[position][1].shape
    ):
        position += 1
    return calls[position][1]


def gradcam(module: nn.Module, images: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM maps (N, 28, 28) for uint8 images (N, 28, 28); ``targets`` default to the
    predicted classes. The model must be in eval mode and contain a Conv2d."""
    if last_conv(module) is None:
        raise ConfigError(f"model {type(module).__name__} has no Conv2d layer for Grad-CAM", "use --method occlusion")
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    images = check_images(images)
    handles = [leaf.register_forward_hook(lambda m, _inputs, output: calls.append((m, output))) for leaf in leaves]
    try:
        with torch.enable_grad():
            logits = module(to_model_input(images))
            classes = _targets(logits, targets)
            score = logits.gather(1, classes[:, None]).sum()
            activation = _last_block_output(calls)
            (gradients,) = torch.autograd.grad(score, activation)
    finally:
        for handle in handles:
            handle.remove()
    activation = activation.detach()
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): importance of each channel
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return _normalise(cam[:, 0])


def _predictor(model: nn.Module | TorchPredictor) -> TorchPredictor:
    return model if isinstance(model, TorchPredictor) else TorchPredictor.of_module(model)


def occlusion(
    model: nn.Module | TorchPredictor, images: np.ndarray, targets: np.ndarray | None = None, *, patch: int = 6, stride: int = 2
) -> np.ndarray:
    """Occlusion maps (N, 28, 28): the drop in the target class's probability (through the
    predictor, without flip averaging) when a ``patch`` x ``patch`` square around each
    pixel is set to background (0)."""
    predictor = _predictor(model)
    images = check_images(images)
    probabilities = predictor.probabilities(images, tta_flip=False)
    classes = probabilities.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
    rows = np.arange(len(images))
    base = probabilities[rows, classes]
    size = images.shape[-1]
    drops = np.zeros((len(images), size, size), np.float32)
    counts = np.zeros((size, size), np.float32)
    for top in range(0, size - patch + 1, stride):
        for left in range(0, size - patch + 1, stride):
            occluded = images.copy()
            occluded[:, top : top + patch, left : left + patch] = 0
            probability = predictor.probabilities(occluded, tta_flip=False)[rows, classes]
            drops[:, top : top + patch, left : left + patch] += (base - probability)[:, None, None]
            counts[top : top + patch, left : left + patch] += 1
    return _normalise(F.relu(torch.from_numpy(drops / np.maximum(counts, 1))))


@dataclass(frozen=True)
class Explanation:
    maps: np.ndarray  # float32 (N, 28, 28) in [0, 1]: where the explained class's evidence is
    probabilities: np.ndarray  # float32 (N, C), with the model's temperature, no flip averaging
    targets: np.ndarray  # int64 (N,) the class each map explains
    method: str  # the method actually used


def method_used(model: LoadedModel, method: str) -> str:
    """The method ``explain`` applies: Grad-CAM needs a convolution, else occlusion."""
    return "gradcam" if method == "gradcam" and last_conv(model.module) is not None else "occlusion"


def explain(model: LoadedModel, images: np.ndarray, *, method: str = "gradcam", target: int | None = None) -> Explanation:
    """Saliency maps for uint8 ``images`` (N, 28, 28) of the class ``target`` (default: each
    image's predicted class). The maps explain a single forward pass, so probabilities here
    are without flip test-time augmentation. A specialist is refused: its model alone
    ranks only its group's classes, so its maps would explain answers nobody gets."""
    from fmnist.inference.combined import refuse_specialist

    refuse_specialist(model, "explain its base run instead: fmnist explain {base} IMAGES")
    predictor = TorchPredictor(model)
    images = check_images(images)
    if target is not None and not 0 <= target < len(predictor.class_names):
        raise ConfigError(f"class index {target} out of range", f"use 0..{len(predictor.class_names) - 1}")
    probabilities = predictor.probabilities(images, tta_flip=False)
    targets = probabilities.argmax(axis=1) if target is None else np.full(len(images), target)
    used = method_used(model, method)
    maps = saliency(predictor, images, targets, method=method)
    return Explanation(maps=maps, probabilities=probabilities, targets=targets.astype(np.int64), method=used)


def saliency(
    model: nn.Module | TorchPredictor, images: np.ndarray, targets: np.ndarray | None = None, *, method: str = "gradcam"
) -> np.ndarray:
    """Saliency maps by ``method`` ("gradcam", falling back to occlusion for a model
    without convolutions, or "occlusion")."""
    if method not in METHODS:
        raise ConfigError(f"unknown saliency method {method!r}", f"use one of {', '.join(METHODS)}")
    module = model.module if isinstance(model, TorchPredictor) else model
    if method == "gradcam" and last_conv(module) is not None:
        return gradcam(module, images, targets)
    return occlusion(model, images, targets)

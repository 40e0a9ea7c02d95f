"""The preprocessing contract: what every model takes as input, defined once.

Training, evaluation, prediction, serving and the ONNX export all feed models the same
thing: float32 images of shape (N, 1, 28, 28) with values in [0, 1], the garment light
on a black (0) background, exactly as the dataset stores them divided by 255.
Normalisation to zero mean and unit variance happens inside the model (its first
layer), so no caller can forget or duplicate it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from fmnist.data.classes import IMAGE_SIZE


@dataclass(frozen=True)
class PreprocessContract:
    image_size: int = IMAGE_SIZE
    channels: int = 1
    scale: float = 1 / 255  # uint8 pixel -> [0, 1]
    background: str = "black"  # garment light on dark, as in the dataset
    # Dataset statistics of the training split, applied inside the model.
    mean: float = 0.2860
    std: float = 0.3530

    def to_dict(self) -> dict:
        return asdict(self)


CONTRACT = PreprocessContract()


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    return tensor.to(torch.float32).mul_(CONTRACT.scale)

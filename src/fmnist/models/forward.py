"""Batched inference of a model on uint8 images, shared by validation, evaluation and prediction."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fmnist.data.contract import to_model_input


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1024,
    tta_flip: bool = False,
    channels_last: bool = True,
) -> torch.Tensor:
    """Logits (N, 10) for uint8 images (N, 28, 28); the model must be in eval mode.

    With ``tta_flip`` the logits of the image and its left-right mirror are averaged.
    """
    images = torch.as_tensor(images)
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = to_model_input(images[start : start + batch_size]).to(device)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        logits = model(batch).float()
        if tta_flip:
            logits = (logits + model(batch.flip(-1)).float()) / 2
        outputs.append(logits.cpu())
    if not outputs:
        return torch.empty(0, 10)
    return torch.cat(outputs)

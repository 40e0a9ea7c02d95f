"""The validation pass after each epoch: mean loss and accuracy, shared across ranks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.inference.predictor import TorchPredictor
from fmnist.training.config import TrainConfig
from fmnist.training.distributed import Distributed
from fmnist.training.precision import autocast, autocast_dtype


@torch.inference_mode()
def validate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, context: Distributed
) -> tuple[float, float]:
    """(mean loss, accuracy) on the validation images; each rank takes a share, summed."""
    model.eval()
    shard = slice(context.rank, None, context.world_size)
    # Validation predicts the way the finished model will (with flip TTA if configured),
    # so the epoch chosen is the one that is best as deployed.
    predictor = TorchPredictor.of_module(model, tta_flip=config.tta_flip, channels_last=config.channels_last, check_finite=False)
    # Under the training's autocast (bfloat16 where native): it only ranks epochs, and at
    # full precision a wide model's validation took a sixth of each epoch (the `best`
    # recipe: 20 of 120 s on the reference CPU). Test evaluation stays float32.
    with autocast(context.device, autocast_dtype(context.device, config.amp)):
        logits = torch.from_numpy(predictor.logits(images[shard].cpu().numpy(), batch_size=config.eval_batch_size))
    shard_labels = labels[shard].cpu()
    sums = torch.tensor(
        [
            F.cross_entropy(logits, shard_labels, reduction="sum").item(),
            (logits.argmax(1) == shard_labels).sum().item(),
            float(len(logits)),
        ],
        dtype=torch.float64,
    )
    loss_sum, correct, count = context.all_reduce_sum(sums).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)

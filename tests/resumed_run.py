"""Train a config whole and, separately, cut after its first epoch and resumed: the two
final models' weights, for tests that every part of the training state is checkpointed
(a module of its own, shared by the training test folders; see recalibrated.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from fmnist.models.saved import load_model
from fmnist.training import resume, train
from fmnist.training.config import TrainConfig
from fmnist.training.events import StopTraining


def whole_and_resumed(config: TrainConfig, folder: Path, data: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    train(config, folder / "whole", data=data)

    def stop_after_first(end) -> None:
        if end.record["epoch"] == 1:
            raise StopTraining("test")

    train(config, folder / "cut", data=data, on_epoch=stop_after_first)
    (folder / "cut" / "model.safetensors").unlink()  # as a kill before the end would leave it
    resume(folder / "cut", data=data)
    return load_model(folder / "whole").module.state_dict(), load_model(folder / "cut").module.state_dict()

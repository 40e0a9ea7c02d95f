"""Loading the served model: a thin layer over fmnist.inference that adds the thread count."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.inference.predictor import Predictor, load_predictor

if TYPE_CHECKING:
    from fmnist.serving.app import ServeSettings


def load_serving_predictor(settings: ServeSettings) -> Predictor:
    """The predictor for ``settings.model``; raises FmnistError (one line) for a bad path."""
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)  # also the ONNX Runtime default in fmnist.inference
    return load_predictor(settings.model, backend=settings.backend)


def model_name(predictor: Predictor) -> str:
    """The run folder's name for a model inside one, else the file's name."""
    source = Path(predictor.source)
    if source.name in ("model.safetensors", "model.onnx") and source.parent.name:
        return source.parent.name
    return source.name

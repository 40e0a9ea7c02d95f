"""Inference: photos -> 28x28 dataset-style images, and predictors (PyTorch, ONNX Runtime)."""

from fmnist.inference.photo import (
    PreparedImage,
    open_image,
    prepare_image,
    prepare_photo,
)
from fmnist.inference.predictor import (
    BACKENDS,
    Prediction,
    Predictor,
    load_predictor,
    top_k,
)

__all__ = [
    "BACKENDS",
    "Prediction",
    "Predictor",
    "PreparedImage",
    "load_predictor",
    "open_image",
    "prepare_image",
    "prepare_photo",
    "top_k",
]

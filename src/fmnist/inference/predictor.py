"""Predictors: uint8 images (N, 28, 28) -> class probabilities, with the same behaviour
for every backend (PyTorch, ONNX Runtime): the model card's calibration temperature and
test-time flip are applied, and results come back as top-k predictions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fmnist.data.contract import CONTRACT
from fmnist.errors import ConfigError, RunError

BACKENDS = ("torch", "onnxruntime")
ONNX_FILE = "model.onnx"  # the name `fmnist export` suggests inside a run folder
UNCERTAIN = "uncertain"


@dataclass
class Prediction:
    label: str  # class name, or "uncertain" below the confidence threshold
    class_id: int | None  # None when uncertain
    probability: float  # of the most likely class
    top_k: list[dict] = field(default_factory=list)  # [{"label", "probability"}], most likely first

    def to_dict(self) -> dict:
        return {"label": self.label, "class_id": self.class_id, "probability": self.probability, "top_k": self.top_k}


class Predictor(Protocol):
    backend: str
    class_names: list[str]
    source: Path

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, C) probabilities for uint8 images (N, 28, 28)."""
        ...


def top_k(
    probabilities: np.ndarray, class_names: list[str], *, k: int = 5, min_confidence: float = 0.0
) -> list[Prediction]:
    """One Prediction per row of ``probabilities`` (N, C)."""
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    predictions = []
    for row, ranked in zip(probabilities, order):
        best = int(ranked[0])
        confident = float(row[best]) >= min_confidence
        predictions.append(
            Prediction(
                label=class_names[best] if confident else UNCERTAIN,
                class_id=best if confident else None,
                probability=round(float(row[best]), 6),
                top_k=[{"label": class_names[i], "probability": round(float(row[i]), 6)} for i in ranked],
            )
        )
    return predictions


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}")
    return images


class TorchPredictor:
    backend = "torch"

    def __init__(self, path: str | Path) -> None:
        from fmnist.models.saved import load_model

        self.model = load_model(path)
        self.source = self.model.path
        self.class_names = list(self.model.card.class_names)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from fmnist.models.forward import predict_logits

        images = _check_images(images)
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        logits = predict_logits(self.model.module, images, tta_flip=self.model.card.tta_flip)
        return _softmax(logits.numpy(), self.model.card.temperature)


class OnnxPredictor:
    backend = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("ONNX Runtime is not installed", "pip install 'fmnist[export]'") from None
        self.source = resolve_onnx_path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.source), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors for bad files
            raise RunError(f"{self.source}: not a loadable ONNX model ({type(error).__name__})", "re-export it") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "fmnist.class_names" not in metadata:
            raise RunError(f"{self.source}: ONNX model without fmnist metadata", "export it with `fmnist export`")
        self.class_names = json.loads(metadata["fmnist.class_names"])
        self.temperature = float(metadata.get("fmnist.temperature", 1.0))
        self.tta_flip = metadata.get("fmnist.tta_flip", "false") == "true"
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def probabilities(self, images: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
        images = _check_images(images)
        outputs = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size, None].astype(np.float32) * np.float32(CONTRACT.scale)
            logits = self.logits(batch)
            if self.tta_flip:
                logits = (logits + self.logits(np.ascontiguousarray(batch[..., ::-1]))) / 2
            outputs.append(_softmax(logits, self.temperature))
        if not outputs:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(outputs)


def resolve_onnx_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / ONNX_FILE
        if not candidate.is_file():
            raise RunError(
                f"{path}: no {ONNX_FILE} in this run folder",
                f"make one with `fmnist export {path} --format onnx --out {candidate}`",
            )
        return candidate
    if not path.is_file():
        raise RunError(f"{path}: no such run folder or ONNX file", "check the path")
    return path


def load_predictor(path: str | Path, *, backend: str = "torch") -> Predictor:
    """A predictor for a run folder or model file (torch) or an ONNX file or run folder
    holding model.onnx (onnxruntime)."""
    if backend == "torch":
        if Path(path).suffix == ".onnx":
            raise ConfigError(f"{path}: an ONNX file needs --backend onnxruntime")
        return TorchPredictor(path)
    if backend == "onnxruntime":
        return OnnxPredictor(path)
    raise ConfigError(f"unknown backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")

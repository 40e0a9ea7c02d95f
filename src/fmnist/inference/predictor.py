"""Predictors: uint8 images (N, 28, 28) -> class probabilities, with the same behaviour
for every backend (PyTorch, ONNX Runtime): the model card's calibration temperature and
test-time flip are applied, and results come back as top-k predictions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmnist.data.classes import IMAGE_SIZE
from fmnist.data.contract import CONTRACT
from fmnist.errors import ConfigError, RunError

if TYPE_CHECKING:
    from fmnist.models.saved import LoadedModel

BACKENDS = ("torch", "onnxruntime")
ONNX_FILE = "model.onnx"  # the name `fmnist export` suggests inside a run folder
UNCERTAIN = "uncertain"
# Keys of the ONNX metadata_props that `fmnist export` writes and OnnxPredictor reads.
META_CLASS_NAMES = "fmnist.class_names"
META_TEMPERATURE = "fmnist.temperature"
META_TTA_FLIP = "fmnist.tta_flip"
META_PREPROCESSING = "fmnist.preprocessing"
META_MODEL = "fmnist.model"


@dataclass
class Prediction:
    label: str  # class name, or "uncertain" below the confidence threshold
    class_id: int | None  # None when uncertain
    probability: float  # of the most likely class (also when uncertain)
    top_k: list[dict] = field(default_factory=list)  # [{"label", "probability"}], most likely first

    def to_dict(self) -> dict:
        return {"label": self.label, "class_id": self.class_id, "probability": self.probability, "top_k": self.top_k}


def top_k(
    probabilities: np.ndarray, class_names: list[str], *, k: int = 5, min_confidence: float = 0.0
) -> list[Prediction]:
    """One Prediction per row of ``probabilities`` (N, C); a row whose best probability is
    below ``min_confidence`` is labelled "uncertain" (class_id None, top_k still filled)."""
    if k < 1:
        raise ConfigError(f"top-k must be at least 1, got {k}", "pass k >= 1")
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"min_confidence must be between 0 and 1, got {min_confidence}", "pass a probability")
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


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float32 probabilities (N, C) of logits (N, C) divided by ``temperature``."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def check_images(images: np.ndarray) -> np.ndarray:
    """``images`` as uint8 (N, 28, 28); a single (28, 28) image becomes a batch of one."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}")
    return images


class Predictor:
    """Base of the backends. Subclasses set the attributes and implement ``logits``."""

    backend: str  # "torch" or "onnxruntime"
    source: Path  # the model file that was loaded
    name: str  # short model name for replies and logs (the run folder's name)
    class_names: list[str]
    temperature: float  # logits are divided by this before the softmax
    tta_flip: bool  # logits averaged over the image and its left-right mirror

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """float32 logits (N, C) of contract inputs float32 (N, 1, 28, 28) in [0, 1]."""
        raise NotImplementedError

    def probabilities(self, images: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
        """float32 (N, C) calibrated probabilities for uint8 images (N, 28, 28).

        Raises RunError when the model's outputs are not (N, C) or not finite: a NaN must
        never become an answer (nor reach JSON, which has no NaN).
        """
        images = check_images(images)
        outputs = [np.zeros((0, len(self.class_names)), np.float32)]
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size, None].astype(np.float32) * np.float32(CONTRACT.scale)
            logits = self.logits(batch)
            if self.tta_flip:
                logits = (logits + self.logits(np.ascontiguousarray(batch[..., ::-1]))) / 2
            probabilities = softmax(self._checked(logits, len(batch)), self.temperature)
            if not np.isfinite(probabilities).all():  # logits finite, but too large for the softmax
                raise self._non_finite(len(batch))
            outputs.append(probabilities)
        return np.concatenate(outputs)

    def _checked(self, logits: np.ndarray, count: int) -> np.ndarray:
        logits = np.asarray(logits)
        if logits.shape != (count, len(self.class_names)):
            raise RunError(
                f"{self.source}: the model returned outputs of shape {logits.shape} for {count} images, "
                f"expected ({count}, {len(self.class_names)})",
                "the model file is corrupt; retrain or re-export it",
            )
        if not np.isfinite(logits).all():
            raise self._non_finite(count)
        return logits

    def _non_finite(self, count: int) -> RunError:
        return RunError(
            f"{self.source}: the model's outputs are NaN or infinite for this batch of {count} image(s)",
            "its weights are damaged; retrain or re-export it",
        )

    def predict(self, images: np.ndarray, *, k: int = 5, min_confidence: float = 0.0) -> list[Prediction]:
        """One Prediction per uint8 image (N, 28, 28), in input order."""
        return top_k(self.probabilities(images), self.class_names, k=k, min_confidence=min_confidence)


def _short_name(path: Path) -> str:
    return path.parent.name if path.stem in ("model", "model.int8") else path.stem


class TorchPredictor(Predictor):
    """One PyTorch model file. A specialist run given as a path is refused: it answers only
    together with its base run (``load_predictor`` combines the two)."""

    backend = "torch"

    def __init__(self, path: str | Path | LoadedModel, *, threads: int | None = None) -> None:
        import torch

        from fmnist.models.saved import LoadedModel, load_model

        if threads:
            torch.set_num_threads(threads)
        if isinstance(path, LoadedModel):
            self.model = path
        else:
            self.model = load_model(path)
            from fmnist.inference.combined import refuse_specialist

            refuse_specialist(
                self.model, "`fmnist predict` and `fmnist serve` combine the two; to export one model, export the base run {base}"
            )
        self.source = self.model.path
        self.name = _short_name(self.source)
        self.class_names = list(self.model.card.class_names)
        self.temperature = float(self.model.card.temperature)
        self.tta_flip = bool(self.model.card.tta_flip)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        # channels_last: the layout the CPU convolution kernels are fastest with here.
        batch = torch.from_numpy(inputs).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model.module(batch).float().numpy()


class OnnxPredictor(Predictor):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        from fmnist import extras

        onnxruntime = extras.require("export", "onnxruntime", feature="the onnxruntime backend")
        from onnxruntime.capi.onnxruntime_pybind11_state import (
            Fail,
            InvalidArgument,
            InvalidGraph,
            InvalidProtobuf,
            NoSuchFile,
            RuntimeException,
        )
        self.source = resolve_onnx_path(path)
        self.name = _short_name(self.source)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(self.source), options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile, RuntimeException) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise RunError(f"{self.source}: not a loadable ONNX model ({first})", "re-export it with `fmnist export`") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if META_CLASS_NAMES not in metadata:
            raise RunError(f"{self.source}: ONNX model without fmnist metadata", "export it with `fmnist export`")
        self.class_names, self.temperature, self.tta_flip = read_onnx_metadata(self.source, metadata)
        self.input_name = check_onnx_signature(self.source, self.session, len(self.class_names))
        # The first answer is checked now, so a model that gives NaN fails at load, in one line.
        self.probabilities(np.array([np.zeros((28, 28)), np.full((28, 28), 255)], dtype=np.uint8))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]


MAX_ONNX_METADATA = 64 * 1024  # characters of one fmnist metadata value; the class names take < 200


def read_onnx_metadata(source: Path, metadata: dict[str, str]) -> tuple[list[str], float, bool]:
    """(class names, temperature, tta_flip) from an ONNX file's fmnist metadata, checked
    like a model card's fields; RunError names the first bad one."""
    from fmnist.bounded_json import JsonRefused, loads_bounded
    from fmnist.models.saved import check_class_names, check_temperature

    fix = "re-export it with `fmnist export`"
    try:
        names = loads_bounded(metadata[META_CLASS_NAMES], max_chars=MAX_ONNX_METADATA)
        class_names = check_class_names(names)
    except JsonRefused as error:
        raise RunError(f"{source}: its metadata {META_CLASS_NAMES} is refused: {error}", fix) from None
    except RunError as error:
        raise RunError(f"{source}: metadata {META_CLASS_NAMES}: {error.problem}", fix) from None
    text = metadata.get(META_TEMPERATURE, "1.0")
    try:
        temperature = check_temperature(float(text) if len(text) <= 40 else text)
    except (ValueError, RunError):
        raise RunError(f"{source}: metadata {META_TEMPERATURE} must be a number from 0.01 to 100, got {text[:40]!r}", fix) from None
    flag = metadata.get(META_TTA_FLIP, "false")
    if flag not in ("true", "false"):
        raise RunError(f"{source}: metadata {META_TTA_FLIP} must be 'true' or 'false', got {flag[:40]!r}", fix)
    return class_names, temperature, flag == "true"


def check_onnx_signature(source: Path, session: object, num_classes: int) -> str:
    """The name of the model's one float input (N, 1, 28, 28); its output must be (N, C)
    with C the number of class names. Symbolic sizes pass (the first answer is checked)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def fits(shape: list, expected: tuple) -> bool:
        return len(shape) == len(expected) and all(not isinstance(d, int) or e is None or d == e for d, e in zip(shape, expected))

    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or not fits(inputs[0].shape, (None, 1, IMAGE_SIZE, IMAGE_SIZE)):
        described = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs[:3])
        raise RunError(f"{source}: the model takes {described}, not float images (N, 1, 28, 28)", "re-export it with `fmnist export`")
    if not outputs or not fits(outputs[0].shape, (None, num_classes)):
        raise RunError(
            f"{source}: the model's output {outputs[0].shape if outputs else 'none'} does not match its {num_classes} class names",
            "re-export it with `fmnist export`",
        )
    return inputs[0].name


def resolve_onnx_path(path: str | Path) -> Path:
    """Accept an ONNX file or a run folder holding model.onnx."""
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


def load_predictor(path: str | Path, *, backend: str = "torch", threads: int | None = None) -> Predictor:
    """A predictor for a run folder or model file (torch), or for an ONNX file or a run
    folder holding model.onnx (onnxruntime). ``threads`` caps the backend's CPU threads.

    A specialist run gives its combination with the base run its card names (over the
    base's classes), or a RunError naming the base run when that is missing."""
    if backend == "torch":
        if Path(path).suffix == ".onnx":
            raise ConfigError(f"{path}: an ONNX file needs --backend onnxruntime")
        from fmnist.models.saved import load_model

        model = load_model(path)
        if model.card.specialist is not None:
            # Never the specialist alone: its outputs cover only its group of classes.
            from fmnist.inference.combined import load_specialist_predictor

            return load_specialist_predictor(model, threads=threads)
        return TorchPredictor(model, threads=threads)
    if backend == "onnxruntime":
        return OnnxPredictor(path, threads=threads)
    raise ConfigError(f"unknown backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")

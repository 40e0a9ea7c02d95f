"""Predictors: uint8 images (N, 28, 28) -> logits and class probabilities, the one route
from images to probabilities. Every backend (a PyTorch model, a TorchScript or ONNX export)
supplies logits; the shared base applies the preprocessing contract's scaling, the test-time
flip, the model card's calibration temperature and the softmax, and ranks the top-k."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmnist.data.contract import CONTRACT, to_model_input
from fmnist.errors import ConfigError, DataError, RunError
from fmnist.inference.tta import Views

if TYPE_CHECKING:
    from fmnist.models.saved import LoadedModel

BACKENDS = ("torch", "onnxruntime")
ONNX_FILE = "model.onnx"  # the name `fmnist export` suggests inside a run folder
UNCERTAIN = "uncertain"
# Keys of the metadata that `fmnist export` writes (ONNX metadata_props, TorchScript's fmnist.json).
META_CLASS_NAMES = "fmnist.class_names"
META_TEMPERATURE = "fmnist.temperature"
META_TTA_FLIP = "fmnist.tta_flip"
META_TTA_SHIFT = "fmnist.tta_shift"
META_PREPROCESSING = "fmnist.preprocessing"
META_MODEL = "fmnist.model"
META_EXPORT_FORMAT = "fmnist.export_format"
# Version 2: uint8 images in, probabilities and logits out (version 1 took float inputs and
# returned logits only; such files are refused with the fix, re-exporting).
EXPORT_FORMAT = "2"
INPUT_NAME, OUTPUT_PROBABILITIES, OUTPUT_LOGITS = "images", "probabilities", "logits"
TORCHSCRIPT_METADATA = "fmnist.json"  # the extra file inside a TorchScript archive


@dataclass
class Prediction:
    label: str  # class name, or "uncertain" below the confidence threshold
    class_id: int | None  # None when uncertain
    probability: float  # of the most likely class (also when uncertain)
    top_k: list[dict] = field(default_factory=list)  # [{"label", "probability"}], most likely first

    def to_dict(self) -> dict:
        return {"label": self.label, "class_id": self.class_id, "probability": self.probability, "top_k": self.top_k}


def _whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def top_k(
    probabilities: np.ndarray, class_names: list[str], *, k: int = 5, min_confidence: float = 0.0
) -> list[Prediction]:
    """One Prediction per row of ``probabilities`` (N, C); a row whose best probability is
    below ``min_confidence`` is labelled "uncertain" (class_id None, top_k still filled)."""
    if not _whole(k) or k < 1:
        raise ConfigError(f"top-k must be at least 1 (a whole number), got {k!r}", "pass k >= 1")
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
    """float32 probabilities (N, C) of logits (N, C) divided by ``temperature``: the
    package's one softmax (evaluation, calibration and explanations use it too)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class ImageArrayError(DataError, ValueError):
    """An image array that is not uint8 (N, S, S) at the contract's image size S."""


def check_images(images: np.ndarray) -> np.ndarray:
    """``images`` as uint8 (N, S, S), S the contract's image size (28): a single (S, S)
    image becomes a batch of one, (N, 1, S, S) loses its channel axis."""
    images = np.asarray(images)
    size = CONTRACT.image_size
    if images.ndim == 2:
        images = images[None]
    elif images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (size, size) or images.dtype != np.uint8:
        raise ImageArrayError(
            f"expected uint8 images of shape (N, {size}, {size}), got {images.dtype} {images.shape}",
            "pass dataset-style images (prepare photos with fmnist.inference.prepare_photo)",
        )
    return images


class Predictor:
    """uint8 images -> logits and calibrated probabilities, the same for every backend.

    The base owns every step but the model itself: the image check, the contract's
    scaling, flip test-time augmentation, the temperature and the softmax. A backend
    implements ``model_logits``; backends whose file has some steps built in say so with
    ``takes_uint8`` / ``flip_inside`` (the self-contained exports of ``fmnist export``).
    """

    backend: str  # "torch" or "onnxruntime"
    source: Path  # the model file that was loaded
    name: str  # short model name for replies and logs (the run folder's name)
    class_names: list[str]
    temperature: float  # logits are divided by this before the softmax
    tta_flip: bool  # logits averaged over the image and its left-right mirror
    tta_shift = False  # and over one-pixel shifts of both (inference/tta.py; only with tta_flip)
    takes_uint8 = False  # model_logits takes the uint8 images (N, S, S), not contract inputs
    flip_inside = False  # model_logits already averages its views (a file exported with tta_flip)
    check_finite = True  # refuse NaN/infinite outputs (off only for the training loop's validation)

    def model_logits(self, inputs: np.ndarray) -> np.ndarray:
        """float32 logits (N, C) of contract inputs float32 (N, 1, S, S) in [0, 1] (or of
        uint8 images (N, S, S) when ``takes_uint8``)."""
        raise NotImplementedError

    def outputs(
        self,
        images: np.ndarray,
        *,
        batch_size: int = 1024,
        tta_flip: bool | None = None,
        tta_shift: bool | None = None,
        temperature: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities), float32 (N, C) each, for uint8 images (N, S, S).

        ``logits`` are before the temperature (averaged over the test-time views);
        ``probabilities`` are ``softmax(logits / temperature)``. ``tta_flip``, ``tta_shift``
        and ``temperature`` default to the model's own; ``tta_flip=False`` turns test-time
        augmentation off altogether (shift views come only with the flip). Raises RunError
        when the model's outputs are not (N, C) or not finite: a NaN must never become an
        answer (nor reach JSON, which has no NaN).
        """
        images = check_images(images)
        if not _whole(batch_size) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number of at least 1, got {batch_size!r}", "pass e.g. 1024")
        flip = self.tta_flip if tta_flip is None else bool(tta_flip)
        shift = flip and bool(self.tta_shift if tta_shift is None else tta_shift)
        if self.flip_inside and (not flip or shift != self.tta_shift):
            raise ConfigError(
                f"{self.source}: this exported model averages each image with its mirror"
                f"{' and their one-pixel shifts' if self.tta_shift else ''} inside its graph",
                "evaluate the run folder to change test-time augmentation",
            )
        views = Views() if self.flip_inside else Views(flip=flip, shift=shift)
        temperature = self.temperature if temperature is None else temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) or not 0 < temperature < float("inf"):
            raise ConfigError(f"temperature must be a positive number, got {temperature}", "pass T > 0")
        all_logits, all_probabilities = [], []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            inputs = batch if self.takes_uint8 else to_model_input(batch).numpy()
            logits = self._view_logits(inputs, views, len(batch))
            probabilities = softmax(logits, temperature)
            if self.check_finite and not np.isfinite(probabilities).all():  # finite logits, too large for the softmax
                raise self._non_finite(len(batch))
            all_logits.append(logits.astype(np.float32, copy=False))
            all_probabilities.append(probabilities)
        if not all_logits:  # no images
            return np.zeros((0, len(self.class_names)), np.float32), np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(all_logits), np.concatenate(all_probabilities)

    def _view_logits(self, inputs: np.ndarray, views: Views, count: int) -> np.ndarray:
        """The weighted mean of the logits of each view of ``inputs`` (one model pass per
        view, so memory stays that of one batch)."""
        if len(views) == 1:
            return self._checked(self.model_logits(inputs), count)
        import torch

        from fmnist.inference.tta import view

        batch, total = torch.from_numpy(inputs), None
        for (rows, columns, mirrored), weight in zip(views.offsets(), views.weights()):
            viewed = view(batch, rows, columns, mirrored).contiguous().numpy()
            logits = weight * self._checked(self.model_logits(viewed), count)
            total = logits if total is None else total + logits
        return total

    def logits(self, images: np.ndarray, **options) -> np.ndarray:
        """float32 (N, C) logits before the temperature; options as ``outputs``."""
        return self.outputs(images, **options)[0]

    def probabilities(self, images: np.ndarray, **options) -> np.ndarray:
        """float32 (N, C) calibrated probabilities; options as ``outputs``."""
        return self.outputs(images, **options)[1]

    def _checked(self, logits: np.ndarray, count: int) -> np.ndarray:
        logits = np.asarray(logits)
        if not self.class_names and logits.ndim == 2:  # a bare module: classes numbered by its width
            self.class_names = [str(i) for i in range(logits.shape[1])]
        if logits.shape != (count, len(self.class_names)):
            raise RunError(
                f"{self.source}: the model returned outputs of shape {logits.shape} for {count} images, "
                f"expected ({count}, {len(self.class_names)})",
                "the model file is corrupt; retrain or re-export it",
            )
        if self.check_finite and not np.isfinite(logits).all():
            raise self._non_finite(count)
        return logits

    def _non_finite(self, count: int) -> RunError:
        return RunError(
            f"{self.source}: the model's outputs are NaN or infinite for this batch of {count} image(s)",
            "its weights are damaged; retrain or re-export it",
        )

    def predict(self, images: np.ndarray, *, k: int = 5, min_confidence: float = 0.0) -> list[Prediction]:
        """One Prediction per uint8 image (N, S, S), in input order."""
        return top_k(self.probabilities(images), self.class_names, k=k, min_confidence=min_confidence)


def _short_name(path: Path) -> str:
    return path.parent.name if path.stem in ("model", "model.int8") else path.stem


class TorchPredictor(Predictor):
    """A PyTorch model: a model file, a loaded one, or (``of_module``) a bare nn.Module such
    as the one being trained. A specialist run given as a path is refused: it answers only
    together with its base run (``load_predictor`` combines the two)."""

    backend = "torch"
    channels_last = True  # the layout the CPU convolution kernels are fastest with here

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
        self.module = self.model.module
        self.source = self.model.path
        self.name = _short_name(self.source)
        self.class_names = list(self.model.card.class_names)
        self.temperature = float(self.model.card.temperature)
        self.tta_flip = bool(self.model.card.tta_flip)
        self.tta_shift = bool(self.model.card.tta_shift)

    @classmethod
    def of_module(
        cls,
        module: object,
        *,
        class_names: list[str] | None = None,
        temperature: float = 1.0,
        tta_flip: bool = False,
        tta_shift: bool = False,
        channels_last: bool = True,
        check_finite: bool = True,
    ) -> TorchPredictor:
        """A predictor of a bare nn.Module (in eval mode, on any device); without
        ``class_names`` the classes are numbered by the module's output width (its first answer).
        ``check_finite`` False passes NaN outputs on (a diverging model in training)."""

        predictor = cls.__new__(cls)
        predictor.model = None
        predictor.module = module
        predictor.source = Path(f"<{type(module).__name__}>")
        predictor.name = type(module).__name__
        predictor.temperature, predictor.tta_flip, predictor.channels_last = float(temperature), bool(tta_flip), channels_last
        predictor.tta_shift = bool(tta_shift) and predictor.tta_flip
        predictor.check_finite = check_finite
        predictor.class_names = [] if class_names is None else list(class_names)  # [] : numbered at the first answer
        return predictor

    def model_logits(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.module.parameters(), torch.empty(0)).device
        batch = torch.from_numpy(inputs).to(device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.module(batch).float().cpu().numpy()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    if lines[0].startswith("The following operation failed in the TorchScript interpreter") and len(lines) > 1:
        return lines[-1][:200]  # the interpreter's traceback comes first, the reason last
    return lines[0][:200]


class OnnxPredictor(Predictor):
    """An ONNX file written by ``fmnist export``: its graph takes the uint8 images and
    returns ``logits`` (flip-averaged when exported so) and ``probabilities``; the base
    applies the metadata's temperature to the logits, which matches the graph's own
    probabilities."""

    backend = "onnxruntime"
    takes_uint8 = True

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
            raise RunError(f"{self.source}: not a loadable ONNX model ({_first_line(error)})", "re-export it with `fmnist export`") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if META_CLASS_NAMES not in metadata:
            raise RunError(f"{self.source}: ONNX model without fmnist metadata", "export it with `fmnist export`")
        self.class_names, self.temperature, self.tta_flip, self.tta_shift = read_export_metadata(self.source, metadata)
        self.flip_inside = self.tta_flip
        self.input_name = check_onnx_signature(self.source, self.session, len(self.class_names))
        # The first answer is checked now, so a model that gives NaN fails at load, in one line.
        self.probabilities(_probe_images())

    def model_logits(self, inputs: np.ndarray) -> np.ndarray:
        from onnxruntime.capi.onnxruntime_pybind11_state import (
            Fail,
            InvalidArgument,
            RuntimeException,
        )

        try:
            return self.session.run([OUTPUT_LOGITS], {self.input_name: inputs})[0]
        except (Fail, InvalidArgument, RuntimeException, MemoryError) as error:  # e.g. an allocation the graph asks for
            raise RunError(f"{self.source}: the model failed to run ({_first_line(error)})", "re-export it with `fmnist export`") from None


class TorchScriptPredictor(Predictor):
    """A TorchScript file written by ``fmnist export --format torchscript``: it takes the
    uint8 images and returns (probabilities, logits), with its metadata in fmnist.json.
    TorchScript runs the code stored in the file: load only files you trust."""

    backend = "torch"
    takes_uint8 = True

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import warnings

        import torch

        if threads:
            torch.set_num_threads(threads)
        self.source = Path(path).expanduser()
        if not self.source.is_file():
            raise RunError(f"{self.source}: no such TorchScript file", "check the path")
        self.name = _short_name(self.source)
        from fmnist.inference.torchscript_check import check_archive, check_graph

        check_archive(self.source, TORCHSCRIPT_METADATA)  # bounded sizes, no code run at load
        extra = {TORCHSCRIPT_METADATA: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is in maintenance mode
                self.module = torch.jit.load(str(self.source), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError, OSError) as error:
            raise RunError(f"{self.source}: not a loadable TorchScript model ({_first_line(error)})", "re-export it with `fmnist export`") from None
        check_graph(self.module, self.source)  # a traced graph of tensor operations, before any run
        from fmnist.bounded_json import JsonRefused, loads_bounded

        text = extra[TORCHSCRIPT_METADATA]
        try:
            text = text.decode("utf-8") if isinstance(text, bytes) else text
            metadata = loads_bounded(text or "null", max_chars=4 * MAX_ONNX_METADATA)
        except UnicodeDecodeError:
            raise RunError(f"{self.source}: its {TORCHSCRIPT_METADATA} is not UTF-8 text", "re-export it with `fmnist export`") from None
        except JsonRefused as error:
            raise RunError(f"{self.source}: its {TORCHSCRIPT_METADATA} is refused: {error}", "re-export it with `fmnist export`") from None
        if not isinstance(metadata, dict) or META_CLASS_NAMES not in metadata:
            raise RunError(f"{self.source}: TorchScript model without fmnist metadata", "export it with `fmnist export`")
        if metadata.get(META_EXPORT_FORMAT) != EXPORT_FORMAT:
            raise RunError(
                f"{self.source}: exported by an older fmnist (float input, logits only)",
                "re-export it with `fmnist export` of this version",
            )
        self.class_names, self.temperature, self.tta_flip, self.tta_shift = read_export_metadata(
            self.source, {key: value for key, value in metadata.items() if isinstance(value, str)}
        )
        self.flip_inside = self.tta_flip
        self.probabilities(_probe_images())

    def model_logits(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        try:
            with torch.inference_mode():
                outputs = self.module(torch.from_numpy(inputs))
        except RuntimeError as error:  # torch.jit.Error is one; so is a failed allocation
            raise RunError(f"{self.source}: the model failed to run ({_first_line(error)})", "re-export it with `fmnist export`") from None
        if not isinstance(outputs, tuple) or len(outputs) != 2:
            raise RunError(f"{self.source}: the model does not return (probabilities, logits)", "re-export it with `fmnist export`")
        return outputs[1].float().numpy()


def _probe_images() -> np.ndarray:
    """A black and a white image: a model that answers NaN for them is refused at load."""
    size = CONTRACT.image_size
    return np.stack([np.zeros((size, size), np.uint8), np.full((size, size), 255, np.uint8)])


MAX_ONNX_METADATA = 64 * 1024  # characters of one fmnist metadata value; the class names take < 200


def read_export_metadata(source: Path, metadata: dict[str, str]) -> tuple[list[str], float, bool, bool]:
    """(class names, temperature, tta_flip, tta_shift) from an exported file's fmnist
    metadata, checked like a model card's fields; RunError names the first bad one."""
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
    flags = []
    for key in (META_TTA_FLIP, META_TTA_SHIFT):  # absent in files exported before shift views
        flag = metadata.get(key, "false")
        if flag not in ("true", "false"):
            raise RunError(f"{source}: metadata {key} must be 'true' or 'false', got {flag[:40]!r}", fix)
        flags.append(flag == "true")
    flip, shift = flags
    if shift and not flip:
        raise RunError(f"{source}: metadata {META_TTA_SHIFT} is 'true' without {META_TTA_FLIP}", fix)
    return class_names, temperature, flip, shift


def check_onnx_signature(source: Path, session: object, num_classes: int) -> str:
    """The name of the model's one uint8 image input; its outputs ``probabilities`` and
    ``logits`` must be (N, C) with C the number of class names. Symbolic sizes and an input
    of unknown rank pass (the first answer is checked)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size = CONTRACT.image_size
    fix = "re-export it with `fmnist export` of this version"
    if len(inputs) == 1 and inputs[0].type == "tensor(float)":
        raise RunError(f"{source}: exported by an older fmnist (float input, logits only)", fix)

    def fits(shape: list | None, expected: tuple) -> bool:
        return len(shape) == len(expected) and all(not isinstance(d, int) or e is None or d == e for d, e in zip(shape, expected))

    shape = inputs[0].shape if len(inputs) == 1 else None
    rank_ok = shape is not None and (not shape or fits(shape, (None, size, size)) or fits(shape, (None, 1, size, size)))
    if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or not rank_ok:
        described = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs[:3])
        raise RunError(f"{source}: the model takes {described}, not uint8 images (N, {size}, {size})", fix)
    named = {output.name: output for output in outputs}
    for name in (OUTPUT_PROBABILITIES, OUTPUT_LOGITS):
        if name not in named:
            raise RunError(f"{source}: the model has no output {name!r}", fix)
        if not fits(named[name].shape, (None, num_classes)):
            raise RunError(
                f"{source}: the model's output {name} {named[name].shape} does not match its {num_classes} class names", fix
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
    """A predictor for a run folder, model file or TorchScript export (.pt) (torch), or for
    an ONNX file or a run folder holding model.onnx (onnxruntime). ``threads`` caps the
    backend's CPU threads.

    A specialist run gives its combination with the base run its card names (over the
    base's classes), or a RunError naming the base run when that is missing."""
    if backend == "torch":
        from fmnist.models.saved import export_kind, load_model

        kind = export_kind(Path(path))
        if kind == "ONNX":
            raise ConfigError(f"{path}: an ONNX file needs --backend onnxruntime")
        if kind == "TorchScript":
            return TorchScriptPredictor(path, threads=threads)

        model = load_model(path)
        if model.card.specialist is not None:
            # Never the specialist alone: its outputs cover only its group of classes.
            from fmnist.inference.combined import load_specialist_predictor

            return load_specialist_predictor(model, threads=threads)
        return TorchPredictor(model, threads=threads)
    if backend == "onnxruntime":
        return OnnxPredictor(path, threads=threads)
    raise ConfigError(f"unknown backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")

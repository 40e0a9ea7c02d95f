"""Self-describing model files: weights plus everything needed to rebuild and use them.

A model file (``model.safetensors`` in a run folder) records the model's registry name
and arguments, the class names, the preprocessing contract and inference options
(test-time augmentation, calibration temperature), so it can be loaded with no other
file and no code beyond fmnist.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fmnist.data.classes import CLASS_NAMES, has_control_character
from fmnist.data.contract import CONTRACT
from fmnist.errors import ConfigError, RunError
from fmnist.models.registry import (
    check_model_args,
    create_meta_model,
    get_spec,
    output_width,
)
from fmnist.run import Run
from fmnist.tensorfile import (
    SAFETENSORS_DTYPES,
    TensorInfo,
    load_tensor_file,
    non_finite_tensors,
    save_tensor_file,
)

MODEL_FORMAT = "fmnist-model/1"


# Bounds of a model card's fields. fmnist's own cards hold 10 class names of < 20
# characters and a temperature fitted within [0.05, 20] (evaluation/calibration.py).
MAX_CLASSES = 1000
MAX_CLASS_NAME = 100  # characters
MAX_MODEL_NAME = 100
MAX_BASE_RUN_PATH = 4096
TEMPERATURE_RANGE = (0.01, 100.0)  # logits are divided by it: tiny values overflow the softmax
# The contract fields a model depends on: a card that claims others was made for another input.
CONTRACT_FIELDS = ("image_size", "channels", "scale", "background")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: object) -> str:
    """``value``'s JSON type and a short excerpt, for messages."""
    if value is None:
        return "nothing (missing or null)"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({repr(value)[:40]})"


def _card_error(field_name: str, expected: str, value: object) -> RunError:
    return RunError(f"model card field {field_name!r} must be {expected}, got {_kind(value)}", "the file is corrupt or was edited")


def check_class_names(value: object) -> list[str]:
    """``value`` as a model's class names: 2 to MAX_CLASSES distinct, non-empty strings."""
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_CLASSES:
        raise _card_error("class_names", f"a list of 2 to {MAX_CLASSES} names", value)
    for name in value:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME:
            raise _card_error("class_names", f"a list of names of 1 to {MAX_CLASS_NAME} characters", name)
        if has_control_character(name):  # the rule of the data's classes.txt
            raise _card_error("class_names", "a list of printable names (no control characters)", name)
    if len(set(value)) != len(value):
        raise _card_error("class_names", "a list of distinct names", value)
    return list(value)


def check_temperature(value: object) -> float:
    """``value`` as a calibration temperature: a finite number within TEMPERATURE_RANGE."""
    low, high = TEMPERATURE_RANGE
    if not _number(value) or not low <= value <= high:
        raise _card_error("temperature", f"a number from {low:g} to {high:g}", value)
    return float(value)


def _check_preprocessing(value: object) -> dict:
    if not isinstance(value, dict) or len(value) > 32:
        raise _card_error("preprocessing", "an object of at most 32 settings", value)
    expected = CONTRACT.to_dict()
    for key in CONTRACT_FIELDS:
        if key in value and value[key] != expected[key]:
            raise RunError(
                f"model card: the model takes preprocessing {key}={repr(value[key])[:40]}, fmnist's contract is {expected[key]!r}",
                "the file was made for other input, or edited",
            )
    return dict(value)


def _check_specialist(value: object, class_names: list[str]) -> dict:
    """The card's extra['specialist'] (see training/specialist.py), checked."""
    if not isinstance(value, dict):
        raise _card_error("extra.specialist", "an object", value)
    classes = value.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) != len(class_names)
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(CLASS_NAMES) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise _card_error("extra.specialist.classes", f"{len(class_names)} distinct labels from 0 to {len(CLASS_NAMES) - 1}", classes)
    base_run = value.get("base_run")
    if not isinstance(base_run, str) or not 0 < len(base_run) <= MAX_BASE_RUN_PATH or "\0" in base_run:
        raise _card_error("extra.specialist.base_run", "the path of the base run", base_run)
    weight = value.get("weight", 1.0)
    if not _number(weight) or not 0.0 <= weight <= 1.0:
        raise _card_error("extra.specialist.weight", "a number from 0 to 1", weight)
    base_weights = value.get("base_weights")  # absent in cards written before it was recorded
    if base_weights is not None and not (isinstance(base_weights, str) and _SHA256.fullmatch(base_weights)):
        raise _card_error("extra.specialist.base_weights", "the SHA-256 of the base run's weights (64 hex digits)", base_weights)
    return value


_SHA256 = re.compile(r"[0-9a-f]{64}")


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes and values of its state dict).
    Not the model file's bytes: calibration rewrites the file with a new temperature, which
    leaves what the weights compute as it was."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class ModelCard:
    """What a model file says about its model."""

    model: str  # registry name
    model_args: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    preprocessing: dict = field(default_factory=CONTRACT.to_dict)
    tta_flip: bool = False  # average predictions over the image and its mirror
    tta_shift: bool = False  # and over one-pixel shifts of both (inference/tta.py); needs tta_flip
    temperature: float = 1.0  # logits are divided by this (calibration; 1 = none)
    extra: dict = field(default_factory=dict)  # provenance: run name, recipe, metrics

    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "model": self.model,
            "model_args": self.model_args,
            "class_names": self.class_names,
            "preprocessing": self.preprocessing,
            "tta_flip": self.tta_flip,
            "tta_shift": self.tta_shift,
            "temperature": self.temperature,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, document: object) -> ModelCard:
        """A card from a model file's document, checked field by field against the schema
        above (types, bounds, the preprocessing contract); RunError names the first bad field.
        The model arguments are checked against the model's builder by load_model."""
        if not isinstance(document, dict):
            raise _card_error("(document)", "an object", document)
        model = document.get("model")
        if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_NAME:
            raise _card_error("model", "the name of a registered model", model)
        model_args = document.get("model_args", {})
        if not isinstance(model_args, dict):
            raise _card_error("model_args", "an object of model arguments", model_args)
        class_names = check_class_names(document.get("class_names", list(CLASS_NAMES)))
        preprocessing = _check_preprocessing(document.get("preprocessing", CONTRACT.to_dict()))
        tta_flip = document.get("tta_flip", False)
        if not isinstance(tta_flip, bool):
            raise _card_error("tta_flip", "true or false", tta_flip)
        tta_shift = document.get("tta_shift", False)  # absent in files written before shift views
        if not isinstance(tta_shift, bool) or (tta_shift and not tta_flip):
            raise _card_error("tta_shift", "true or false (true only with tta_flip true)", tta_shift)
        temperature = check_temperature(document.get("temperature", 1.0))
        extra = document.get("extra", {})
        if not isinstance(extra, dict):
            raise _card_error("extra", "an object", extra)
        if "specialist" in extra:
            _check_specialist(extra["specialist"], class_names)
        return cls(
            model=model,
            model_args=dict(model_args),
            class_names=class_names,
            preprocessing=preprocessing,
            tta_flip=tta_flip,
            tta_shift=tta_shift,
            temperature=float(temperature),
            extra=dict(extra),
        )

    @property
    def specialist(self) -> dict | None:
        """The specialist section (group, classes, base_run, weight), or None for a main model."""
        return self.extra.get("specialist")


@dataclass
class LoadedModel:
    module: nn.Module  # in eval mode
    card: ModelCard
    path: Path


def save_model(path: Path, module: nn.Module, card: ModelCard) -> None:
    save_tensor_file(path, dict(module.state_dict()), card.to_dict())


def resolve_model_path(path: str | Path) -> Path:
    """Accept a run folder (uses its model.safetensors) or a model file."""
    path = Path(path).expanduser()
    if path.is_dir():
        return Run(path).model_path()  # a folder that holds no run is refused by name
    if not path.exists():
        raise RunError(f"{path}: no such run folder or model file", "check the path")
    kind = export_kind(path)
    if kind is not None:
        raise RunError(
            f"{path} is an exported {kind} file; this command takes a run folder or its model.safetensors",
            "pass the run folder it was exported from (predict, evaluate and serve take exports too)",
        )
    return path


def export_kind(path: Path) -> str | None:
    """"ONNX" or "TorchScript" for a file `fmnist export` wrote (by suffix, any case, or a
    zip archive's signature), None for anything else (a model file, or garbage)."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "ONNX"
    if suffix in (".pt", ".torchscript"):
        return "TorchScript"
    try:
        with path.open("rb") as handle:
            signature = handle.read(4)
    except OSError:
        return None
    return "TorchScript" if signature == b"PK\x03\x04" else None


def _expected_tensors(module: nn.Module) -> dict[str, TensorInfo]:
    return {
        key: TensorInfo(SAFETENSORS_DTYPES.get(value.dtype, str(value.dtype)), tuple(value.shape))
        for key, value in module.state_dict().items()
    }


def _check_fit(file: Path, card: ModelCard, found: dict[str, TensorInfo], meta: nn.Module) -> None:
    """Refuse a file whose tensors differ from the model's in names, shapes or dtypes, or
    whose model's outputs do not match the card's classes; nothing is allocated yet."""
    expected = _expected_tensors(meta)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [
        f"{key} {found[key].dtype}{list(found[key].shape)} instead of {info.dtype}{list(info.shape)}"
        for key, info in expected.items()
        if key in found and found[key] != info
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(key[:60] for key in unexpected[:3])}" if unexpected else "",
                "; ".join(wrong[:2]),
            )
            if part
        )
        raise RunError(f"{file}: weights do not fit model {card.model!r} ({details})", "the file is corrupt or was edited")
    outputs = output_width(meta)
    if outputs != len(card.class_names):
        raise RunError(
            f"{file}: model {card.model!r} has {outputs} outputs but the card names {len(card.class_names)} classes",
            "the file is corrupt or was edited",
        )


def _probe(file: Path, module: nn.Module, temperature: float) -> None:
    """Refuse a model whose outputs are not finite on plain inputs (black, grey, white):
    weights that overflow would answer NaN for every image."""
    probe = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, CONTRACT.channels, CONTRACT.image_size, CONTRACT.image_size)
    with torch.inference_mode():
        logits = module(probe.contiguous(memory_format=torch.channels_last)).float() / temperature
    if not bool(torch.isfinite(logits).all()):
        raise RunError(f"{file}: the model's outputs are NaN or infinite", "its weights are damaged; retrain it")


def load_model(path: str | Path) -> LoadedModel:
    """Load a model file or a run folder's model, ready for inference (eval mode, CPU).

    Nothing in the file is trusted: the card is checked against its schema and the model
    arguments against the builder's bounds; the model is built on the meta device and its
    tensor names, shapes and dtypes compared with the file's before any weight is read;
    non-finite weights and outputs are refused. Every refusal is a one-line RunError.
    """
    file = resolve_model_path(path)
    checked: dict[str, ModelCard] = {}

    def check(found: dict[str, TensorInfo], document: dict) -> None:
        if document.get("format") != MODEL_FORMAT:
            raise RunError(
                f"{file}: not an fmnist model file (format {repr(document.get('format'))[:40]})",
                "pass a run folder or its model.safetensors (checkpoints are not model files)",
            )
        try:
            card = ModelCard.from_dict(document)
        except RunError as error:
            raise RunError(f"{file}: {error.problem}", error.fix) from None
        try:
            meta = create_meta_model(card.model, **card.model_args)
        except ConfigError as error:
            raise RunError(f"{file}: {error.problem}", "the file is corrupt, or was made by a different fmnist version") from None
        _check_fit(file, card, found, meta)
        checked["card"] = card

    tensors, _ = load_tensor_file(file, check=check)
    card = checked["card"]
    damaged = non_finite_tensors(tensors)
    if damaged:
        raise RunError(
            f"{file}: weights {', '.join(damaged[:3])} hold NaN or infinite values", "the file is damaged or training diverged; retrain it"
        )
    module = get_spec(card.model).builder(**check_model_args(card.model, card.model_args))
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:  # cannot happen after _check_fit; kept as a second guard
        first = str(error).splitlines()[0][:200]
        raise RunError(f"{file}: weights do not fit model {card.model!r} ({first})", "the file is corrupt") from None
    # Weights in the channels_last layout that every caller feeds inputs in: with the
    # default layout oneDNN reorders the weights on every call (fast_cnn at batch 1024 on
    # the reference CPU: 9,600 images/s instead of 23,800).
    module.to(memory_format=torch.channels_last).eval()
    _probe(file, module, card.temperature)
    return LoadedModel(module=module, card=card, path=file)

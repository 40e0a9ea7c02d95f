"""Export a trained model to ONNX (optionally int8-quantized) or TorchScript, self-contained.

Both formats take what the dataset stores: uint8 images (N, 28, 28) (or (N, 1, 28, 28)),
the garment light on black, and return ``probabilities`` (calibrated: the temperature and,
when the run uses it, the test-time flip are inside the graph) and ``logits`` (before the
temperature, flip-averaged); the batch axis is dynamic. So a plain ONNX Runtime user needs
no other file, and no fmnist: the graph is the model wrapped in ``SelfContained`` (scaling
by the preprocessing contract, the flip average, /T, softmax). The metadata carries the
contract, the class names, the temperature and the flip flag. Every export is read back
through fmnist's predictor for that format and checked against the PyTorch predictor before
it is reported done: probabilities must agree within ``PARITY_TOLERANCE`` (int8 is
reported, not held to it). Next to the model ``fmnist export`` writes ``prepare_photo.py``,
the photo -> 28x28 steps in numpy and Pillow only (fmnist/inference/standalone_photo.py).
"""

from __future__ import annotations

import copy
import io
import json
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import fmnist
from fmnist import extras
from fmnist.data.contract import CONTRACT
from fmnist.errors import ConfigError, DataError, RunError
from fmnist.files import atomic_path, atomic_write_text, refuse_overwriting
from fmnist.inference.predictor import (
    EXPORT_FORMAT,
    INPUT_NAME,
    META_CLASS_NAMES,
    META_EXPORT_FORMAT,
    META_MODEL,
    META_PREPROCESSING,
    META_TEMPERATURE,
    META_TTA_FLIP,
    META_TTA_SHIFT,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
    TORCHSCRIPT_METADATA,
    OnnxPredictor,
    Predictor,
    TorchPredictor,
    TorchScriptPredictor,
)
from fmnist.inference.tta import Views, view
from fmnist.models.saved import LoadedModel
from fmnist.run import files_of_run_around

FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-4  # max |probability difference| against PyTorch
CHECK_IMAGES = 1000  # images the parity check runs on
CALIBRATION_IMAGES = 1024  # training images that set the int8 activation ranges
CALIBRATION_BATCH = 32  # equal batches: some ORT calibrators cannot stack a short last one
OPSET = 17
PHOTO_REFERENCE = "prepare_photo.py"  # written next to the exported model
CONTRACT_TEXT = (
    f"input '{INPUT_NAME}': uint8 (N, {CONTRACT.image_size}, {CONTRACT.image_size}) or "
    f"(N, 1, {CONTRACT.image_size}, {CONTRACT.image_size}), dataset-style: light garment on black (0); "
    f"scaling (pixel / 255) and normalisation are inside the model. outputs '{OUTPUT_PROBABILITIES}' "
    f"float32 (N, C): calibrated, softmax(logits / temperature), and '{OUTPUT_LOGITS}' float32 (N, C): "
    "before the temperature; with tta_flip both already average the image and its left-right mirror "
    "(with tta_shift also one-pixel shifts of both). "
    f"Photos: prepare them with {PHOTO_REFERENCE} (numpy + Pillow), written next to the model."
)


class SelfContained(nn.Module):
    """The exported graph: uint8 images (N, S, S) or (N, 1, S, S) -> (probabilities, logits).

    Scaling by the contract, the optional test-time views (inference/tta.py: all views of
    the batch in one batch of V x N, so the network appears once in the graph), the
    temperature and the softmax: the steps fmnist's Predictor applies in Python, here
    inside the file."""

    def __init__(self, module: nn.Module, *, classes: int, temperature: float, tta_flip: bool, tta_shift: bool = False) -> None:
        super().__init__()
        self.module, self.classes, self.temperature, self.tta_flip = module, classes, float(temperature), bool(tta_flip)
        self.views = Views(flip=self.tta_flip, shift=bool(tta_shift))
        self.register_buffer("view_weights", torch.tensor(self.views.weights(), dtype=torch.float32).reshape(-1, 1, 1))
        self.size, self.scale = CONTRACT.image_size, float(CONTRACT.scale)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = images.reshape(-1, 1, self.size, self.size).to(torch.float32) * self.scale
        if len(self.views) > 1:
            batch = torch.cat([view(inputs, *offset) for offset in self.views.offsets()])
            stacked = self.module(batch).float().reshape(len(self.views), -1, self.classes)  # constants: static axes
            logits = (stacked * self.view_weights).sum(0)
        else:
            logits = self.module(inputs).float()
        return torch.softmax(logits / self.temperature, dim=1), logits


@dataclass
class Int8Report:
    """The quantized model against the float one, both in ONNX Runtime, on the test split."""

    test_images: int
    calibration_images: int  # from the training split
    float_accuracy: float
    int8_accuracy: float
    accuracy_drop_points: float  # percentage points, float minus int8
    float_images_per_second: float  # batch 1024, median of repeats, this process's threads
    int8_images_per_second: float
    speedup: float
    float_bytes: int
    int8_bytes: int
    max_probability_difference: float


@dataclass
class ExportResult:
    path: Path
    format: str
    check_images: int  # images the parity check ran on
    check_source: str  # where they came from
    max_probability_difference: float  # against PyTorch
    int8: Int8Report | None = None
    photo_reference: str = ""  # what happened to prepare_photo.py next to the model

    def summary(self) -> dict:
        """Flat key -> value pairs for printing."""
        rows = {
            "format": self.format + (" (int8)" if self.int8 else ""),
            "written": str(self.path),
            "bytes": self.path.stat().st_size,
            "parity check": f"max |dprob| {self.max_probability_difference:.2e} vs PyTorch "
            f"on {self.check_images} {self.check_source} images",
        }
        if self.photo_reference:
            rows["photo preparation"] = self.photo_reference
        if self.int8:
            report = self.int8
            rows["int8 accuracy drop"] = (
                f"{report.accuracy_drop_points:+.2f} points ({report.float_accuracy:.2%} -> "
                f"{report.int8_accuracy:.2%} on {report.test_images} test images)"
            )
            rows["int8 speed-up"] = (
                f"x{report.speedup:.2f} ({report.float_images_per_second:,.0f} -> "
                f"{report.int8_images_per_second:,.0f} images/s, batch 1024, {torch.get_num_threads()} thread(s))"
            )
            rows["int8 size"] = f"{report.float_bytes:,} -> {report.int8_bytes:,} bytes"
        return rows


def _fixed_window(size: int, output: int) -> tuple[int, int] | None:
    """(kernel, stride) of a plain pool with the same windows as adaptive pooling from
    ``size`` to ``output``, or None when the adaptive windows are uneven."""
    starts = [math.floor(i * size / output) for i in range(output)]
    ends = [math.ceil((i + 1) * size / output) for i in range(output)]
    kernels = {end - start for start, end in zip(starts, ends)}
    stride = starts[1] - starts[0] if output > 1 else size
    if len(kernels) != 1 or any(start != i * stride for i, start in enumerate(starts)):
        return None
    return kernels.pop(), stride


def exportable_module(module: nn.Module, sample: torch.Tensor) -> nn.Module:
    """A copy of ``module`` the ONNX exporter accepts: adaptive pools whose output size does
    not divide the input (fast_cnn's 7x7 -> 3x3) become the plain pools with the very same
    windows (kernel 3, stride 2 there), which compute identical values."""
    module = copy.deepcopy(module).eval()
    sizes: dict[str, tuple[int, int]] = {}
    adaptive = {
        name: child
        for name, child in module.named_modules()
        if isinstance(child, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d))
    }
    hooks = [
        child.register_forward_hook(lambda _, inputs, __, name=name: sizes.__setitem__(name, tuple(inputs[0].shape[-2:])))
        for name, child in adaptive.items()
    ]
    with torch.inference_mode():
        module(sample)
    for hook in hooks:
        hook.remove()
    for name, child in adaptive.items():
        if name not in sizes:  # never called in the forward pass
            continue
        output = child.output_size if isinstance(child.output_size, tuple) else (child.output_size,) * 2
        windows = [_fixed_window(size, out or size) for size, out in zip(sizes[name], output)]
        if None in windows:
            raise RunError(f"layer {name}: adaptive pooling {sizes[name]} -> {output} has uneven windows", "ONNX cannot express it")
        (kernel_h, stride_h), (kernel_w, stride_w) = windows
        pool = nn.MaxPool2d if isinstance(child, nn.AdaptiveMaxPool2d) else nn.AvgPool2d
        module.set_submodule(name, pool((kernel_h, kernel_w), (stride_h, stride_w)))
    return module


def _source_name(path: Path) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _metadata(loaded: LoadedModel) -> dict[str, str]:
    card = loaded.card
    return {
        META_CLASS_NAMES: json.dumps(card.class_names),
        META_TEMPERATURE: repr(float(card.temperature)),
        META_TTA_FLIP: "true" if card.tta_flip else "false",
        META_TTA_SHIFT: "true" if card.tta_shift else "false",
        META_PREPROCESSING: json.dumps({**card.preprocessing, "description": CONTRACT_TEXT}),
        # The source by its run folder and file name: no path of the exporting machine.
        META_MODEL: json.dumps({"name": card.model, "args": card.model_args, "source": _source_name(loaded.path)}),
        META_EXPORT_FORMAT: EXPORT_FORMAT,
        "fmnist.version": fmnist.__version__,
    }


def _check_images(data: str | Path | None) -> tuple[np.ndarray, str]:
    """Images for the parity check: training images when the data is found (the test split
    is kept for final measurement), otherwise seeded random images."""
    from fmnist.data import load

    try:
        images = load("train", data, download=False, progress=False).images
    except DataError:
        if data is not None:
            raise
        rng = np.random.default_rng(0)
        size = CONTRACT.image_size
        return rng.integers(0, 256, size=(CHECK_IMAGES, size, size), dtype=np.uint8), "random"
    rng = np.random.default_rng(0)
    return images[rng.choice(len(images), min(CHECK_IMAGES, len(images)), replace=False)], "training"


def _parity(reference: TorchPredictor, exported: Predictor, images: np.ndarray) -> float:
    """max |dprob| of the exported file (read back by fmnist's predictor for its format)
    against the PyTorch predictor; RunError at PARITY_TOLERANCE or more."""
    difference = float(np.abs(reference.probabilities(images) - exported.probabilities(images)).max())
    if not difference < PARITY_TOLERANCE:
        raise RunError(
            f"exported model disagrees with PyTorch: max |dprob| {difference:.2e} >= {PARITY_TOLERANCE:g}",
            "report this model and torch version as a bug",
        )
    return difference


def self_contained(loaded: LoadedModel) -> tuple[nn.Module, torch.Tensor]:
    """The graph to export (``SelfContained`` around an exporter-friendly copy of the
    model) and a uint8 sample batch (2, S, S) to trace it with."""
    size = CONTRACT.image_size
    module = exportable_module(loaded.module, torch.zeros(2, CONTRACT.channels, size, size))
    card = loaded.card
    wrapped = SelfContained(
        module, classes=len(card.class_names), temperature=card.temperature, tta_flip=card.tta_flip, tta_shift=card.tta_shift
    )
    return wrapped.eval(), torch.zeros(2, size, size, dtype=torch.uint8)


def set_input_rank(model: object, dims: list[str | int] | None) -> None:
    """Declare the ONNX graph input's shape as ``dims``, or (None) leave its rank open, so
    ONNX Runtime takes both (N, S, S) and (N, 1, S, S): the graph reshapes either."""
    shape = model.graph.input[0].type.tensor_type
    shape.ClearField("shape")
    if dims is not None:
        for dim in dims:
            entry = shape.shape.dim.add()
            if isinstance(dim, int):
                entry.dim_value = dim
            else:
                entry.dim_param = dim


def write_onnx(loaded: LoadedModel, path: Path) -> None:
    """Write the self-contained float32 ONNX model (dynamic batch, open input rank) with
    fmnist metadata."""
    import onnx

    wrapped, sample = self_contained(loaded)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which
        # needs onnxscript (not a dependency); it still exports these models exactly.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # Shape checks inside models are traced as constants: right, since 28x28 is fixed.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapped,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_PROBABILITIES, OUTPUT_LOGITS],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_PROBABILITIES: {0: "batch"}, OUTPUT_LOGITS: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, _metadata(loaded))
    model.doc_string = f"fmnist {loaded.card.model} classifier. {CONTRACT_TEXT}"
    onnx.checker.check_model(model)  # with the traced input shape: the checker wants one
    set_input_rank(model, None)
    onnx.save(model, str(path))


def export_onnx(model: str | Path, out: Path, *, data: str | Path | None = None) -> ExportResult:
    """Export to ONNX and check it against PyTorch (max |dprob| < PARITY_TOLERANCE)."""
    reference = TorchPredictor(model)
    images, source = _check_images(data)
    with atomic_path(out) as temporary:
        write_onnx(reference.model, temporary)
        difference = _parity(reference, OnnxPredictor(temporary), images)
    return ExportResult(out, "onnx", len(images), source, difference)


def export_torchscript(model: str | Path, out: Path, *, data: str | Path | None = None) -> ExportResult:
    """Export to TorchScript (traced ``SelfContained``: uint8 images in, (probabilities,
    logits) out; metadata in the archive's extra file fmnist.json) and check it against
    the eager model."""
    reference = TorchPredictor(model)
    images, source = _check_images(data)
    wrapped, sample = self_contained(reference.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is in maintenance mode
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks: 28x28 is fixed
        traced = torch.jit.trace(wrapped, sample)
        with atomic_path(out) as temporary:
            metadata = json.dumps(_metadata(reference.model))
            # Serialised in memory, then written by Python: torch.jit.save writing to a full
            # disk aborts the whole process (a C++ exception in a destructor), where a
            # Python write raises an OSError that atomic_path reports.
            archive = io.BytesIO()
            torch.jit.save(traced, archive, _extra_files={TORCHSCRIPT_METADATA: metadata})
            temporary.write_bytes(archive.getvalue())
            difference = _parity(reference, TorchScriptPredictor(temporary), images)
    return ExportResult(out, "torchscript", len(images), source, difference)


def _images_per_second(predictor: OnnxPredictor, images: np.ndarray, *, repeats: int = 5) -> float:
    batch = images[:1024]
    predictor.probabilities(batch)  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.probabilities(batch)
        samples.append(time.perf_counter() - started)
    return len(batch) / float(np.median(samples))


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over training images, in equal batches."""

    def __init__(self, images: np.ndarray) -> None:
        size = CALIBRATION_BATCH  # the graph takes the uint8 images as they are
        self.batches = iter([{INPUT_NAME: images[i : i + size]} for i in range(0, len(images) - size + 1, size)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantize_onnx(float_path: Path, out: Path, *, data: str | Path | None = None) -> Int8Report:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on training images,
    then the accuracy drop and speed-up measured on the test split in ONNX Runtime."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fmnist.data import load
    from fmnist.evaluation.predictions import predict

    train = load("train", data, progress=False)
    test = load("test", data, progress=False)
    rng = np.random.default_rng(0)
    count = min(CALIBRATION_IMAGES, len(train.images)) // CALIBRATION_BATCH * CALIBRATION_BATCH
    if count == 0:
        raise DataError(f"int8 calibration needs at least {CALIBRATION_BATCH} training images", "pass a larger --data")
    calibration = train.images[rng.choice(len(train.images), count, replace=False)]
    with tempfile.TemporaryDirectory(prefix="fmnist-int8-") as folder:
        ranked, prepared, quantized = (Path(folder) / name for name in ("ranked.onnx", "prepared.onnx", "int8.onnx"))
        # Shape inference wants a known input rank: (N, S, S) while quantizing, opened after.
        ranked_model = onnx.load(str(float_path))
        set_input_rank(ranked_model, ["batch", CONTRACT.image_size, CONTRACT.image_size])
        onnx.save(ranked_model, str(ranked))
        quant_pre_process(str(ranked), str(prepared))
        graph = onnx.load(str(prepared)).graph
        # Kept in float: the input normalisation and the first convolution, which sees the
        # image itself. fast_cnn's whitening stem multiplies pixel differences by
        # 1/sqrt(eigenvalue) of rare patch directions, so 8-bit rounding there is amplified:
        # quantizing it cost 3.5 points on 5,000 held-out training images, keeping it float
        # 0.0 (top-1 agreement with the float model 94.9% vs 99.8%). Its one input channel
        # makes it a small share of the work.
        first_conv = next(node.name for node in graph.node if node.op_type == "Conv")
        names = [node.name for node in graph.node]
        before_first_conv = names[: names.index(first_conv)]
        # Kept in float too: everything after the classifier's last Gemm/MatMul, i.e. the
        # flip average, /T and the softmax; quantized, the probabilities came out in steps
        # of 1/255 (max |dprob| 2.6e-3 against the same graph's logits through a float softmax).
        last_product = max((i for i, node in enumerate(graph.node) if node.op_type in ("Gemm", "MatMul")), default=len(names))
        after_classifier = names[last_product + 1 :]
        quantize_static(
            str(prepared),
            str(quantized),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[*before_first_conv, first_conv, *after_classifier],
            # A BatchNorm that is not folded into a convolution (fast_cnn pools between
            # them) has 1-D weights: one scale per channel along axis 0, not the default 1,
            # which ONNX Runtime would reject with a warning and quantize per tensor.
            extra_options={"QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}},
        )
        model = onnx.load(str(quantized))
        set_input_rank(model, None)
        onnx.helper.set_model_props(model, {prop.key: prop.value for prop in onnx.load(str(float_path)).metadata_props})
        onnx.save(model, str(quantized))
        with atomic_path(out) as temporary:
            shutil.copyfile(quantized, temporary)
    threads = torch.get_num_threads()  # follows OMP_NUM_THREADS, as the PyTorch backend does
    float_model, int8_model = OnnxPredictor(float_path, threads=threads), OnnxPredictor(out, threads=threads)
    float_predictions = predict(float_model, test.images, test.labels)
    int8_predictions = predict(int8_model, test.images, test.labels)
    float_accuracy, int8_accuracy = float_predictions.accuracy(), int8_predictions.accuracy()
    float_speed = _images_per_second(float_model, test.images)
    int8_speed = _images_per_second(int8_model, test.images)
    return Int8Report(
        test_images=len(test.images),
        calibration_images=len(calibration),
        float_accuracy=float_accuracy,
        int8_accuracy=int8_accuracy,
        accuracy_drop_points=round(100 * (float_accuracy - int8_accuracy), 2),
        float_images_per_second=round(float_speed, 1),
        int8_images_per_second=round(int8_speed, 1),
        speedup=round(int8_speed / float_speed, 3),
        float_bytes=float_path.stat().st_size,
        int8_bytes=out.stat().st_size,
        max_probability_difference=float(np.abs(float_predictions.probabilities - int8_predictions.probabilities).max()),
    )


def _data_files(data: str | Path | None) -> list[Path]:
    """The dataset files the export reads (for the parity check and int8 calibration)."""
    from fmnist.data.locate import find_existing_source

    try:
        source = find_existing_source(data)
    except DataError:
        return [Path(data)] if data is not None else []  # reported when the data are loaded
    if source is None:
        return []
    return [path for files in source.splits.values() for path in files.paths]


def export_model(
    model: str | Path, out: str | Path, *, fmt: str, int8: bool = False, data: str | Path | None = None
) -> ExportResult:
    """Export a run folder or model file to ``out`` in format ``fmt`` ("onnx" or "torchscript").

    With ``int8`` (ONNX only) ``out`` receives the int8 model; the float model it was made
    from is checked against PyTorch first, and the accuracy drop and speed-up are measured
    on the test split.
    """
    out = Path(out).expanduser()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 works with --format onnx only", "drop --int8 or use --format onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder", "give a file name, e.g. model.onnx")
    refuse_overwriting(out, [*files_of_run_around(model), *_data_files(data)])
    if fmt == "torchscript":
        result = export_torchscript(model, out, data=data)
    else:
        extras.require("export", feature="ONNX export")
        if not int8:
            result = export_onnx(model, out, data=data)
        else:
            with tempfile.TemporaryDirectory(prefix="fmnist-export-") as folder:
                float_path = Path(folder) / "model.onnx"
                checked = export_onnx(model, float_path, data=data)
                report = quantize_onnx(float_path, out, data=data)
            result = ExportResult(out, "onnx", checked.check_images, checked.check_source, checked.max_probability_difference, report)
    result.photo_reference = write_photo_reference(out.parent)
    return result


PHOTO_REFERENCE_MARK = "# fmnist photo preparation reference"  # the first line of the file written


def write_photo_reference(folder: Path) -> str:
    """Write prepare_photo.py (numpy + Pillow only) into ``folder``; a file of that name
    that fmnist did not write is left alone. Returns what happened, for the summary."""
    from fmnist.inference import standalone_photo

    path = folder / PHOTO_REFERENCE
    text = Path(standalone_photo.__file__).read_text()
    if path.exists():
        try:
            ours = path.is_file() and path.read_text(errors="replace").startswith(PHOTO_REFERENCE_MARK)
        except OSError:
            ours = False
        if not ours:
            return f"{path} exists and is not fmnist's: left as it is"
    atomic_write_text(path, text)
    return f"{path} (photo -> {CONTRACT.image_size}x{CONTRACT.image_size} uint8, numpy + Pillow)"

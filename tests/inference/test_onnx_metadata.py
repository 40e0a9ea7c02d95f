"""ONNX files are not trusted either: fmnist metadata, outputs and weights are checked.

Regression tests: the onnxruntime predictor parsed ``fmnist.class_names`` with a plain
``json.loads`` (deep nesting -> RecursionError, any type accepted), took any temperature
(0 -> division by zero, NaN -> NaN answers), read any ``tta_flip`` text as false, and
answered NaN for a model with NaN weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stub_predictors import NaNOnSecondImage

from fmnist.errors import RunError
from fmnist.inference import load_predictor
from fmnist.inference.predictor import (
    META_CLASS_NAMES,
    META_TEMPERATURE,
    META_TTA_FLIP,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fmnist.export import export_model

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_model(tiny_run, path, fmt="onnx", data=tiny_run.parent / "data")
    return path


def crafted(exported: Path, folder: Path, *, metadata: dict[str, str] | None = None, poison: bool = False) -> Path:
    """A copy of ``exported`` with metadata values replaced, or a weight set to NaN."""
    model = onnx.load(str(exported))
    for prop in model.metadata_props:
        if metadata and prop.key in metadata:
            prop.value = metadata[prop.key]
    if poison:
        initializer = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) > 1)
        values = onnx.numpy_helper.to_array(initializer).copy()
        values.flat[0] = np.nan
        initializer.CopyFrom(onnx.numpy_helper.from_array(values, initializer.name))
    path = folder / "crafted.onnx"
    onnx.save(model, str(path))
    return path


NAMES = json.dumps([f"class {i}" for i in range(10)])
CASES = {
    "class-names-deeply-nested": ({META_CLASS_NAMES: "[" * 30_000 + "]" * 30_000}, "nested 30000 levels deep"),
    "class-names-huge": ({META_CLASS_NAMES: json.dumps(["x" * 90_000] * 2)}, "characters of JSON"),
    "class-names-not-json": ({META_CLASS_NAMES: "[shirt"}, "not valid JSON"),
    "class-names-a-string": ({META_CLASS_NAMES: '"Shirt"'}, "'class_names' must be a list"),
    "class-names-numbers": ({META_CLASS_NAMES: json.dumps(list(range(10)))}, "list of names"),
    "class-names-fewer-than-outputs": ({META_CLASS_NAMES: json.dumps(["a", "b", "c"])}, "does not match its 3 class names"),
    "temperature-zero": ({META_CLASS_NAMES: NAMES, META_TEMPERATURE: "0"}, "fmnist.temperature must be a number"),
    "temperature-nan": ({META_TEMPERATURE: "nan"}, "fmnist.temperature must be a number"),
    "temperature-infinite": ({META_TEMPERATURE: "1e999"}, "fmnist.temperature must be a number"),
    "temperature-negative": ({META_TEMPERATURE: "-2"}, "fmnist.temperature must be a number"),
    "temperature-text": ({META_TEMPERATURE: "warm"}, "fmnist.temperature must be a number"),
    "tta-flip-yes": ({META_TTA_FLIP: "yes"}, "fmnist.tta_flip must be 'true' or 'false'"),
    "tta-flip-capitalised": ({META_TTA_FLIP: "True"}, "fmnist.tta_flip must be"),
}


@pytest.mark.parametrize("case", CASES)
def test_crafted_metadata_is_refused_in_one_line(exported: Path, tmp_path: Path, case: str) -> None:
    metadata, fragment = CASES[case]
    path = crafted(exported, tmp_path, metadata=metadata)
    with pytest.raises(RunError) as caught:
        load_predictor(path, backend="onnxruntime")
    message = str(caught.value)
    assert fragment in message and "\n" not in message and len(message) < 1000, message


def test_the_unchanged_copy_loads(exported: Path, tmp_path: Path) -> None:
    predictor = load_predictor(crafted(exported, tmp_path), backend="onnxruntime")
    assert len(predictor.class_names) == 10


def test_nan_weights_are_refused_at_load(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="outputs are NaN or infinite"):
        load_predictor(crafted(exported, tmp_path, poison=True), backend="onnxruntime")


def test_predict_cli_refuses_crafted_metadata(run_fmnist, exported: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "grey.png"
    Image.new("L", (28, 28), 90).save(image)
    path = crafted(exported, tmp_path, metadata={META_TEMPERATURE: "nan"})
    run_fmnist("predict", str(path), str(image), "--backend", "onnxruntime").error_line("fmnist.temperature must be a number")


def test_non_finite_outputs_are_refused_at_inference() -> None:
    predictor = NaNOnSecondImage()
    assert predictor.probabilities(np.zeros((1, 28, 28), np.uint8)).shape == (1, 10)
    with pytest.raises(RunError, match="outputs are NaN or infinite for this batch of 2"):
        predictor.predict(np.zeros((2, 28, 28), np.uint8))

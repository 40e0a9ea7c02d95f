"""Predictors: the same checks over every backend, cross-checked against the model run by
hand (scaling, flip average, temperature, softmax), and every way loading one can go wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from recalibrated import recalibrated

from fmnist.data import load
from fmnist.errors import ConfigError, DataError, RunError
from fmnist.export import export_model
from fmnist.inference import BACKENDS, UNCERTAIN, load_predictor, top_k
from fmnist.models import load_model


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-onnx") / "model.onnx"
    export_model(tiny_run, path, fmt="onnx", data=tiny_run.parent / "data")
    return path


@pytest.fixture(scope="module")
def calibrated_model(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_run's model with a temperature of 2.5 and test-time flip switched on."""
    return recalibrated(tiny_run, tmp_path_factory.mktemp("calibrated"), temperature=2.5, tta_flip=True)


def model_source(backend: str, tiny_run: Path, tiny_onnx: Path) -> Path:
    return tiny_run if backend == "torch" else tiny_onnx


@pytest.fixture(scope="module")
def tiny_images(tiny_run: Path) -> tuple[np.ndarray, np.ndarray]:
    test = load("test", tiny_run.parent / "data", download=False, progress=False)
    return test.images, test.labels


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_predicts_the_learnable_data(backend, tiny_run, tiny_onnx, tiny_images):
    images, labels = tiny_images
    predictor = load_predictor(model_source(backend, tiny_run, tiny_onnx), backend=backend)
    expected_name = "run" if backend == "torch" else tiny_onnx.parent.name  # the folder holding model.*
    assert predictor.backend == backend and predictor.name == expected_name and len(predictor.class_names) == 10
    probabilities = predictor.probabilities(images)
    assert probabilities.shape == (100, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert (probabilities.argmax(1) == labels).mean() >= 0.4  # tiny_run scores ~0.6; chance is 0.1
    predictions = predictor.predict(images[:7], k=3)
    assert [p.class_id for p in predictions] == probabilities[:7].argmax(1).tolist()
    assert all(len(p.top_k) == 3 and p.top_k[0]["label"] == p.label for p in predictions)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_of_any_size_give_the_same_answer(backend, tiny_run, tiny_onnx, tiny_images):
    images = tiny_images[0][:9]
    predictor = load_predictor(model_source(backend, tiny_run, tiny_onnx), backend=backend)
    whole = predictor.probabilities(images)
    in_pieces = predictor.probabilities(images, batch_size=4)
    one_by_one = np.concatenate([predictor.probabilities(image) for image in images])  # (28, 28) each
    np.testing.assert_allclose(in_pieces, whole, atol=1e-6)
    np.testing.assert_allclose(one_by_one, whole, atol=1e-6)
    assert predictor.probabilities(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)
    assert predictor.predict(np.zeros((0, 28, 28), np.uint8)) == []


def test_torch_backend_matches_the_evaluation_path_with_temperature_and_flip(calibrated_model, tiny_images):
    images = tiny_images[0]
    predictor = load_predictor(calibrated_model)
    assert predictor.temperature == 2.5 and predictor.tta_flip
    loaded = load_model(calibrated_model)
    inputs = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    with torch.inference_mode():
        logits = (loaded.module(inputs) + loaded.module(inputs.flip(-1))) / 2
        plain_logits = loaded.module(inputs)
    expected = torch.softmax(logits / 2.5, dim=1).numpy()
    np.testing.assert_allclose(predictor.probabilities(images), expected, atol=1e-6)
    np.testing.assert_allclose(predictor.logits(images), logits.numpy(), atol=1e-5)
    plain = torch.softmax(plain_logits, dim=1).numpy()
    assert np.abs(predictor.probabilities(images) - plain).max() > 1e-3  # the options changed something
    # Per call: the raw logits at temperature 1 without the flip are the model's own.
    np.testing.assert_allclose(predictor.probabilities(images, tta_flip=False, temperature=1.0), plain, atol=1e-6)


def test_onnx_backend_carries_temperature_and_flip(calibrated_model, tiny_images, tmp_path, tiny_run):
    path = tmp_path / "calibrated.onnx"
    export_model(calibrated_model, path, fmt="onnx", data=tiny_run.parent / "data")
    onnx_predictor = load_predictor(path, backend="onnxruntime")
    assert onnx_predictor.temperature == 2.5 and onnx_predictor.tta_flip
    images = tiny_images[0]
    torch_probabilities = load_predictor(calibrated_model).probabilities(images)
    assert np.abs(onnx_predictor.probabilities(images) - torch_probabilities).max() < 1e-4


def test_a_flip_can_be_added_per_call_but_not_taken_out_of_an_export(calibrated_model, tiny_run, tiny_onnx, tiny_images):
    images = tiny_images[0][:20]
    plain_onnx, plain_torch = load_predictor(tiny_onnx, backend="onnxruntime"), load_predictor(tiny_run)
    assert not plain_onnx.tta_flip  # the base flips the images and runs the graph twice
    np.testing.assert_allclose(
        plain_onnx.probabilities(images, tta_flip=True), plain_torch.probabilities(images, tta_flip=True), atol=1e-5
    )
    assert np.abs(plain_onnx.probabilities(images, tta_flip=True) - plain_onnx.probabilities(images)).max() > 1e-4
    exported = export_model(calibrated_model, calibrated_model.parent / "flip.pt", fmt="torchscript").path
    with pytest.raises(ConfigError, match="averages each image with its mirror inside its graph"):
        load_predictor(exported).probabilities(images, tta_flip=False)


def test_top_k_ranks_and_abstains():
    names = [f"class{i}" for i in range(4)]
    probabilities = np.array([[0.1, 0.6, 0.2, 0.1], [0.3, 0.25, 0.25, 0.2]], np.float32)
    confident, unsure = top_k(probabilities, names, k=2, min_confidence=0.5)
    assert (confident.label, confident.class_id, confident.probability) == ("class1", 1, pytest.approx(0.6))
    assert [entry["label"] for entry in confident.top_k] == ["class1", "class2"]
    assert (unsure.label, unsure.class_id) == (UNCERTAIN, None)
    assert unsure.probability == pytest.approx(0.3) and unsure.top_k[0]["label"] == "class0"
    assert len(top_k(probabilities, names, k=10)[0].top_k) == 4  # k capped at the class count
    assert unsure.to_dict() == {
        "label": UNCERTAIN,
        "class_id": None,
        "probability": unsure.probability,
        "top_k": unsure.top_k,
    }
    with pytest.raises(ConfigError, match="min_confidence must be between 0 and 1"):
        top_k(probabilities, names, min_confidence=1.5)
    with pytest.raises(ConfigError, match="top-k must be at least 1"):
        top_k(probabilities, names, k=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_image_arrays_are_refused(backend, tiny_run, tiny_onnx):
    predictor = load_predictor(model_source(backend, tiny_run, tiny_onnx), backend=backend)
    for images in (np.zeros((2, 28, 28), np.float32), np.zeros((2, 32, 32), np.uint8), np.zeros((2, 3, 28, 28), np.uint8)):
        with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, 28, 28\)"):
            predictor.probabilities(images)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(predictor.probabilities(images[:, None]), predictor.probabilities(images))


def test_loading_refuses_what_it_cannot_use(tmp_path, tiny_run, tiny_onnx):
    cases = [
        (tmp_path / "missing", "torch", RunError, "no such run folder or model file"),
        (tmp_path / "missing", "onnxruntime", RunError, "no such run folder or ONNX file"),
        (tmp_path, "onnxruntime", RunError, "no model.onnx in this run folder"),
        (tiny_onnx, "torch", ConfigError, "an ONNX file needs --backend onnxruntime"),
        (tiny_run, "tensorflow", ConfigError, "unknown backend 'tensorflow'"),
    ]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf")
    cases.append((garbage, "onnxruntime", RunError, "not a loadable ONNX model"))
    for path, backend, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            load_predictor(path, backend=backend)


def test_onnx_without_fmnist_metadata_is_refused(tmp_path, tiny_onnx):
    import onnx

    model = onnx.load(str(tiny_onnx))
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    with pytest.raises(RunError, match="ONNX model without fmnist metadata"):
        load_predictor(plain, backend="onnxruntime")


@pytest.mark.parametrize(
    "options", [{"batch_size": 0}, {"batch_size": -1}, {"batch_size": 2.5}, {"batch_size": True}, {"temperature": "2"}]
)
def test_bad_call_options_are_config_errors_not_python_errors(tiny_run, tiny_images, options):
    predictor = load_predictor(tiny_run)
    with pytest.raises(ConfigError):
        predictor.outputs(tiny_images[0][:3], **options)


def test_a_fractional_top_k_is_refused():
    with pytest.raises(ConfigError, match="top-k"):
        top_k(np.full((1, 3), 1 / 3, np.float32), ["a", "b", "c"], k=2.5)

"""Shift test-time views: the views themselves, the predictor's weighted average checked
against the model run by hand, the same views inside ONNX and TorchScript exports, the
features that explain predictions, and every refusal of a shift without the flip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.data import load
from fmnist.errors import ConfigError, RunError
from fmnist.evaluation.interpretation import FeatureRecorder, final_linear
from fmnist.export import export_model
from fmnist.inference import load_predictor
from fmnist.inference.predictor import (
    META_CLASS_NAMES,
    META_TTA_FLIP,
    META_TTA_SHIFT,
    TorchPredictor,
    read_export_metadata,
)
from fmnist.inference.tta import Views, view
from fmnist.models import load_model, save_model
from fmnist.training import resolve_config


@pytest.fixture(scope="module")
def shift_model(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_run's model with flip and shift views on and a temperature of 2."""
    loaded = load_model(tiny_run)
    loaded.card.tta_flip, loaded.card.tta_shift, loaded.card.temperature = True, True, 2.0
    path = tmp_path_factory.mktemp("shift") / "model.safetensors"
    save_model(path, loaded.module, loaded.card)
    return path


@pytest.fixture(scope="module")
def images(tiny_run: Path) -> np.ndarray:
    return load("test", tiny_run.parent / "data", download=False, progress=False).images[:40]


def test_views_move_by_one_pixel_and_fill_the_edge_with_background():
    image = torch.arange(1, 10, dtype=torch.uint8).reshape(1, 3, 3)
    assert view(image, 1, 0, False).tolist() == [[[0, 0, 0], [1, 2, 3], [4, 5, 6]]]  # down
    assert view(image, -1, 0, False).tolist() == [[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]  # up
    assert view(image, 0, 1, False).tolist() == [[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]  # right
    assert view(image, 0, -1, True).tolist() == [[[2, 1, 0], [5, 4, 0], [8, 7, 0]]]  # mirrored, then left
    assert view(image, 0, 0, False) is image
    floats = torch.rand(2, 1, 28, 28)
    assert torch.equal(view(floats, 1, 0, False)[..., 1:, :], floats[..., :-1, :])


def test_view_plans_and_their_weights():
    assert len(Views()) == 1 and Views().weights() == (1.0,)
    assert Views(flip=True).offsets() == ((0, 0, False), (0, 0, True)) and Views(flip=True).weights() == (0.5, 0.5)
    both = Views(flip=True, shift=True)
    assert len(both) == 10 and len(set(both.offsets())) == 10
    assert sum(both.weights()) == pytest.approx(1.0)
    assert sum(both.weights()[:2]) == pytest.approx(0.5)  # the unshifted pair counts half
    with pytest.raises(ValueError, match="needs tta_flip"):
        Views(shift=True)


def test_the_predictor_averages_the_ten_views_as_computed_by_hand(shift_model: Path, images: np.ndarray):
    predictor = load_predictor(shift_model)
    assert predictor.tta_flip and predictor.tta_shift
    module = load_model(shift_model).module
    inputs = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    with torch.inference_mode():
        flip = (module(inputs) + module(inputs.flip(-1))) / 2
        shifted = []
        for rows, columns in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            moved = torch.roll(inputs, (rows, columns), dims=(-2, -1))
            # roll wraps around: blank the row or column that came in from the far side
            if rows:
                moved[..., 0 if rows > 0 else -1, :] = 0
            if columns:
                moved[..., :, 0 if columns > 0 else -1] = 0
            shifted.append((module(moved) + module(moved.flip(-1))) / 2)
        expected = 0.5 * flip + 0.5 * torch.stack(shifted).mean(0)
    np.testing.assert_allclose(predictor.logits(images), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(predictor.probabilities(images), torch.softmax(expected / 2.0, 1).numpy(), atol=1e-5)
    assert np.abs(expected.numpy() - flip.numpy()).max() > 1e-3  # the shifts changed something
    # Per call: shift off leaves the flip; flip off leaves the plain image (no shift without flip).
    np.testing.assert_allclose(predictor.logits(images, tta_shift=False), flip.numpy(), atol=1e-5)
    with torch.inference_mode():
        plain = module(inputs).numpy()
    np.testing.assert_allclose(predictor.logits(images, tta_flip=False), plain, atol=1e-5)
    np.testing.assert_allclose(predictor.logits(images, batch_size=7), predictor.logits(images), atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_carry_the_shift_views_inside_their_graph(fmt: str, shift_model: Path, images: np.ndarray, tiny_run: Path):
    path = shift_model.parent / ("model.onnx" if fmt == "onnx" else "model.pt")
    export_model(shift_model, path, fmt=fmt, data=tiny_run.parent / "data")
    exported = load_predictor(path, backend="onnxruntime" if fmt == "onnx" else "torch")
    assert exported.tta_flip and exported.tta_shift and exported.temperature == 2.0
    reference = load_predictor(shift_model)
    np.testing.assert_allclose(exported.logits(images), reference.logits(images), atol=1e-4)
    np.testing.assert_allclose(exported.probabilities(images), reference.probabilities(images), atol=1e-4)
    with pytest.raises(ConfigError, match="mirror and their one-pixel shifts inside its graph"):
        exported.probabilities(images, tta_shift=False)


def test_recorded_features_give_the_averaged_logits(shift_model: Path, images: np.ndarray):
    loaded = load_model(shift_model)
    recorder = FeatureRecorder(loaded.module)
    try:
        logits = TorchPredictor(loaded).logits(images, batch_size=16)  # three batches of ten views
    finally:
        recorder.remove()
    features = recorder.features(tta_flip=True, tta_shift=True)
    assert features.shape[0] == len(images)
    with torch.inference_mode():
        head = final_linear(loaded.module)(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(head, logits, atol=1e-4)


def test_a_shift_without_the_flip_is_refused_everywhere(shift_model: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="tta_shift must be false when tta_flip is false"):
        resolve_config("fast", overrides={"tta_flip": False})
    assert not resolve_config("fast", overrides={"tta_flip": False, "tta_shift": False}).tta_shift
    loaded = load_model(shift_model)
    loaded.card.tta_flip = False
    bad = tmp_path / "model.safetensors"
    save_model(bad, loaded.module, loaded.card)
    with pytest.raises(RunError, match="tta_shift"):
        load_model(bad)
    names = '["a", "b"]'
    with pytest.raises(RunError, match="without fmnist.tta_flip"):
        read_export_metadata(tmp_path, {META_CLASS_NAMES: names, META_TTA_SHIFT: "true"})
    with pytest.raises(RunError, match="must be 'true' or 'false'"):
        read_export_metadata(tmp_path, {META_CLASS_NAMES: names, META_TTA_FLIP: "true", META_TTA_SHIFT: "yes"})
    # Files exported before shift views have no such key: flip only.
    assert read_export_metadata(tmp_path, {META_CLASS_NAMES: names, META_TTA_FLIP: "true"})[2:] == (True, False)


def test_the_fast_recipe_uses_shift_views_and_no_augment_switches_them_off(run_fmnist):
    assert resolve_config("fast").tta_shift
    result = run_fmnist("train", "--no-augment", "--print-config")
    assert result.returncode == 0, result.stderr
    assert '"tta_shift": false' in result.stdout

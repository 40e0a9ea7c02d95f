"""Training on the user's own data: the model gets one output per class of the data, and the
class names travel with the run into the model file, the evaluation and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.errors import ConfigError, DataError
from fmnist.evaluation.evaluate import evaluate_run
from fmnist.models import load_model
from fmnist.training import read_config_file, resolve_config, train

DIGITS = ("zero", "one", "two", "three", "four")


def bar_arrays(count: int, classes: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like arrays a model learns in a few steps: class k is a bright bar at row 2 + 5k."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % classes).astype(np.uint8)
    images = rng.integers(0, 50, size=(count, 28, 28), dtype=np.uint8)
    images[np.arange(count), 2 + 5 * labels.astype(np.int64), 4:24] = 230
    return images, labels


@pytest.fixture
def digits_npz(tmp_path: Path) -> Path:
    """An .npz in the keras.datasets layout with a classes.txt next to it: 5 classes."""
    x_train, y_train = bar_arrays(300, len(DIGITS), seed=0)
    x_test, y_test = bar_arrays(100, len(DIGITS), seed=1)
    folder = tmp_path / "digits"
    folder.mkdir()
    np.savez(folder / "digits.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (folder / "classes.txt").write_text("\n".join(DIGITS) + "\n")
    return folder / "digits.npz"


def test_npz_with_classes_txt_round_trip(tmp_path: Path, digits_npz: Path, small_config: Path, learnable_dir: Path) -> None:
    config = resolve_config("seed", file_values=read_config_file(small_config), overrides={"epochs": 3})
    train(config, tmp_path / "run", data=digits_npz)
    model = load_model(tmp_path / "run")
    assert model.card.class_names == list(DIGITS)
    assert model.card.model_args["num_classes"] == len(DIGITS)
    assert model.module(torch.zeros(1, 1, 28, 28)).shape == (1, len(DIGITS))
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert recorded["format"] == "npz" and recorded["class_names"] == list(DIGITS)
    assert recorded["classes_file"].endswith("classes.txt") and len(recorded["content_digest"]) == 64
    predictions, document = evaluate_run(tmp_path / "run", digits_npz)
    assert document["class_names"] == list(DIGITS) and document["data"]["format"] == "npz"
    assert predictions.accuracy() > 0.6  # 20% is chance
    # The Fashion-named test data is not this model's.
    with pytest.raises(DataError, match="the model predicts 5 classes .* has 10"):
        evaluate_run(tmp_path / "run", learnable_dir, write=False)


def test_a_num_classes_that_contradicts_the_data_is_refused(tmp_path: Path, digits_npz: Path, small_config: Path) -> None:
    config = resolve_config("seed", file_values=read_config_file(small_config), overrides={"epochs": 1})
    config = config.__class__(**{**config.__dict__, "model_args": {**config.model_args, "num_classes": 10}})
    with pytest.raises(ConfigError, match="num_classes is 10 but the data has 5 classes"):
        train(config, tmp_path / "run", data=digits_npz)


def test_resuming_on_data_with_other_classes_is_refused(tmp_path: Path, digits_npz: Path, small_config: Path, learnable_dir: Path) -> None:
    from fmnist.training import resume

    config = resolve_config("seed", file_values=read_config_file(small_config), overrides={"epochs": 1})
    train(config, tmp_path / "run", data=digits_npz)
    (tmp_path / "run" / "model.safetensors").unlink()  # as if interrupted after its checkpoint
    with pytest.raises(DataError, match="was trained on 5 classes .* this data has 10"):
        resume(tmp_path / "run", data=learnable_dir)

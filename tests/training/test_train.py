"""The training function through the Python API: outputs, determinism, best weights."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fmnist.errors import RunError
from fmnist.models import load_model
from fmnist.training import read_config_file, resolve_config, train
from fmnist.training.checkpoint import load_training_state


def _config(small_config: Path, **overrides):
    return resolve_config("seed", file_values=read_config_file(small_config), overrides=overrides)


def test_a_run_folder_holds_everything(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    result = train(_config(small_config), tmp_path / "run", data=learnable_dir)
    run = tmp_path / "run"
    for name in ("config.json", "run.json", "epochs.jsonl", "model.safetensors", "checkpoints/last.safetensors"):
        assert (run / name).is_file(), name
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"} <= set(epochs[0])
    provenance = json.loads((run / "run.json").read_text())
    assert provenance["torch"] == torch.__version__
    assert provenance["data"]["train_images"] + provenance["data"]["val_images"] == 400
    assert json.loads((run / "config.json").read_text())["model_args"] == {"width": 8, "hidden": 16}
    assert result.history == epochs
    # The model learns the bars: far above the 10% of chance.
    assert epochs[-1]["val_accuracy"] > 0.5


def test_the_final_model_is_the_best_validation_epoch(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    result = train(_config(small_config, epochs=4), tmp_path / "run", data=learnable_dir)
    epochs = result.history
    best = min(epochs, key=lambda e: e["val_loss"])
    assert result.best_epoch == best["epoch"]
    model = load_model(tmp_path / "run")
    assert model.card.extra["best_epoch"] == best["epoch"]
    # model.safetensors is the one final model: the best epoch's weights, as the training
    # state keeps them (there is no second, best-checkpoint model file).
    state = load_training_state(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert torch.equal(load_file(str(tmp_path / "run" / "model.safetensors"))["1.weight"], state.best_model["1.weight"])
    assert not (tmp_path / "run" / "checkpoints" / "best.safetensors").exists()


def test_select_on_val_accuracy_keeps_the_most_accurate_epoch(
    tmp_path: Path, learnable_dir: Path, small_config: Path
) -> None:
    result = train(_config(small_config, epochs=4, select_on="val_accuracy"), tmp_path / "run", data=learnable_dir)
    accuracies = [e["val_accuracy"] for e in result.history]
    # The first epoch reaching the highest accuracy (a later tie is no improvement).
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1
    assert load_model(tmp_path / "run").card.extra["best_epoch"] == result.best_epoch


def test_select_on_must_name_a_validation_figure(small_config: Path) -> None:
    from fmnist.errors import ConfigError

    with pytest.raises(ConfigError, match="select_on"):
        _config(small_config, select_on="test_accuracy")


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    train(_config(small_config, epochs=2, seed=3), tmp_path / "a", data=learnable_dir)
    train(_config(small_config, epochs=2, seed=3), tmp_path / "b", data=learnable_dir)
    train(_config(small_config, epochs=2, seed=4), tmp_path / "c", data=learnable_dir)
    a, b, c = (load_file(str(tmp_path / name / "model.safetensors")) for name in "abc")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_a_run_folder_is_never_overwritten(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    train(_config(small_config, epochs=1), tmp_path / "run", data=learnable_dir)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        train(_config(small_config, epochs=1), tmp_path / "run", data=learnable_dir)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_early_stopping_stops_and_is_recorded(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    # With a learning rate this small nothing improves by min_delta, so patience runs out.
    config = _config(small_config, epochs=10, patience=1, lr=1e-9)
    result = train(config, tmp_path / "run", data=learnable_dir)
    assert result.stopped_early
    assert len(result.history) < 10


def test_autocast_only_where_bfloat16_is_native() -> None:
    import torch

    from fmnist.training.precision import autocast_dtype, native_bfloat16

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, False) is None
    assert autocast_dtype(torch.device("cuda"), True) is torch.bfloat16
    assert autocast_dtype(cpu, True) is (torch.bfloat16 if native_bfloat16(cpu) else None)


def test_a_model_left_at_chance_level_is_warned_about(
    tmp_path: Path, data_files, small_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Identical images with balanced labels: nothing to learn, so validation accuracy is
    # exactly chance (10%) while the loss stays finite and no divergence check fires.
    blank = SimpleNamespace(images=np.full((400, 28, 28), 128, np.uint8), labels=(np.arange(400) % 10).astype(np.uint8))
    folder = tmp_path / "blank"
    data_files.idx_split(folder, blank)
    with caplog.at_level("WARNING", logger="fmnist.training.divergence"):
        result = train(_config(small_config), tmp_path / "run", data=folder)
    assert [e["val_accuracy"] for e in result.history] == [0.1, 0.1, 0.1]
    warnings = [r.getMessage() for r in caplog.records if "chance level" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not every epoch
    assert "after 2 epochs" in warnings[0] and "no better than guessing" in warnings[0] and "(lr, now" in warnings[0]


def test_a_learning_model_gets_no_chance_warning(
    tmp_path: Path, learnable_dir: Path, small_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="fmnist.training.divergence"):
        train(_config(small_config), tmp_path / "run", data=learnable_dir)
    assert not [r for r in caplog.records if "chance level" in r.getMessage()]


def test_a_short_run_of_the_default_recipe_learns(tmp_path: Path, real_fmnist_dir: Path) -> None:
    # 2,000 images for 3 epochs is 21 steps, 4 of them warm-up: without gradient clipping
    # the first steps at the recipe's peak rate left this run at 10% (chance) for good.
    config = resolve_config(overrides={"subset": 2000, "epochs": 3, "seed": 0})
    assert config.recipe == "fast" and config.grad_clip > 0
    result = train(config, tmp_path / "run", data=real_fmnist_dir)
    assert result.history[-1]["val_accuracy"] > 0.5

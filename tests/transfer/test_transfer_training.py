"""Fine-tuning: ImageNet weights from a local file, a frozen warm-up that leaves the
backbone's weights untouched, then a smaller backbone learning rate; --init from one of
our runs; exact resume with freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fmnist.errors import RunError
from fmnist.models import create_model
from fmnist.models.pretrained import load_run_weights
from fmnist.training import EpochEnd, resolve_config, resume, train
from fmnist.training.checkpoint import load_training_state
from fmnist.training.run_folder import RunPaths

SMALL = {"model": "seed_cnn", "model_args": {"width": 8, "hidden": 16}, "batch_size": 32}


def backbone_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Learned backbone weights (parameters, not BatchNorm statistics), without the fc head."""
    return {
        name: value.detach().clone()
        for name, value in model.named_parameters()
        if name.startswith("backbone.") and not name.startswith("backbone.fc.")
    }


@pytest.fixture
def resnet_weights(tmp_path: Path) -> Path:
    """Random ResNet-18 weights under torchvision's names (1000-class head included)."""
    torch.manual_seed(7)
    source = create_model("resnet18", image_size=32, num_classes=1000)
    state = {k.removeprefix("backbone."): v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    path = tmp_path / "resnet18-random.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_frozen_warm_up_then_discriminative_rates(tmp_path: Path, learnable_dir: Path, resnet_weights: Path) -> None:
    config = resolve_config(
        "seed",
        overrides={
            "model": "resnet18",
            "model_args": {"image_size": 32},
            "pretrained": str(resnet_weights),
            "freeze_epochs": 1,
            "backbone_lr_scale": 0.1,
            "schedule": "constant",
            "lr": 1e-3,
            "epochs": 2,
            "subset": 100,
            "val_fraction": 0.2,
            "batch_size": 20,
            "threads": 1,
            "augment": {"enabled": False},
        },
    )
    pretrained = {f"backbone.{k}": v for k, v in load_file(str(resnet_weights)).items()}
    snapshots: list[tuple[dict, dict]] = []

    def on_epoch(end: EpochEnd) -> None:
        snapshots.append((backbone_parameters(end.model), {k: v.clone() for k, v in end.model.state_dict().items()}))

    result = train(config, tmp_path / "run", data=learnable_dir, on_epoch=on_epoch)

    (frozen, frozen_state), (tuned, _) = snapshots
    assert frozen.keys() and all(torch.equal(frozen[k], pretrained[k]) for k in frozen)  # warm-up: untouched
    assert not all(torch.equal(tuned[k], frozen[k]) for k in tuned)  # then the backbone learns
    head_start = create_model("resnet18", image_size=32)  # the head is fresh and learns from epoch 1
    assert frozen_state["backbone.fc.weight"].shape == (10, 512)
    assert not torch.equal(frozen_state["backbone.fc.weight"], head_start.state_dict()["backbone.fc.weight"])
    # After the warm-up the backbone's groups run at 0.1 x the head's rate.
    groups = load_training_state(RunPaths(result.run_dir).last_checkpoint).optimizer["param_groups"]
    rates = {bool(group["backbone"]): group["lr"] for group in groups}
    assert rates[False] == pytest.approx(1e-3) and rates[True] == pytest.approx(1e-4)
    assert result.history[-1]["epoch"] == 2


def test_resume_with_a_frozen_warm_up_is_exact(tmp_path: Path, learnable_dir: Path) -> None:
    overrides = {**SMALL, "epochs": 3, "freeze_epochs": 1, "backbone_lr_scale": 0.5, "optimizer": "sgd",
                 "lr": 0.05, "schedule": "onecycle", "threads": 1}
    config = resolve_config("seed", overrides=overrides)
    reference = train(config, tmp_path / "reference", data=learnable_dir)

    class Crash(Exception):
        pass

    def crash_after_first_epoch(end: EpochEnd) -> None:  # called after the epoch's checkpoint
        raise Crash

    with pytest.raises(Crash):
        train(config, tmp_path / "interrupted", data=learnable_dir, on_epoch=crash_after_first_epoch)
    resumed = resume(tmp_path / "interrupted", data=learnable_dir)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    expected, actual = reference.model.state_dict(), resumed.model.state_dict()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_init_copies_a_run_and_reinitialises_a_head_of_another_size(tiny_run: Path) -> None:
    saved = load_file(str(tiny_run / "model.safetensors"))
    same = create_model("seed_cnn", width=8, hidden=16)
    transfer = load_run_weights(same, tiny_run)
    assert transfer.reinitialised == [] and len(transfer.loaded) == len(saved)

    torch.manual_seed(3)
    four_classes = create_model("seed_cnn", width=8, hidden=16, num_classes=4)
    fresh_head = four_classes.state_dict()["22.weight"].clone()
    transfer = load_run_weights(four_classes, tiny_run)
    assert transfer.reinitialised == ["22.weight", "22.bias"]  # the last Linear: 10 -> 4 outputs
    state = four_classes.state_dict()
    assert torch.equal(state["22.weight"], fresh_head)
    assert all(torch.equal(state[k], saved[k]) for k in transfer.loaded)
    assert "re-initialised" not in transfer.summary() and "22.weight" in transfer.summary()


def test_init_run_is_where_training_starts(tmp_path: Path, tiny_run: Path) -> None:
    data = tiny_run.parent / "data"
    # A rate so small that one epoch barely moves the weights: they must still be tiny_run's.
    config = resolve_config("seed", overrides={**SMALL, "epochs": 1, "lr": 1e-9, "init_run": str(tiny_run), "threads": 1})
    result = train(config, tmp_path / "run", data=data)
    saved = load_file(str(tiny_run / "model.safetensors"))
    trained = result.model.state_dict()
    for key in ("4.weight", "22.weight"):
        assert torch.allclose(trained[key], saved[key], atol=1e-5), key
    scratch = create_model("seed_cnn", width=8, hidden=16)
    assert not torch.allclose(scratch.state_dict()["4.weight"], saved["4.weight"], atol=1e-2)
    card = load_file(str(result.run_dir / "model.safetensors"))  # the weights file itself loads
    assert card.keys() == saved.keys()


def test_init_from_another_architecture_is_refused(tmp_path: Path, tiny_run: Path) -> None:
    with pytest.raises(RunError, match="none of its weights fit this model"):
        load_run_weights(create_model("fast_cnn"), tiny_run)

"""PlainSGD (training/optimizer.py) computes what torch.optim.SGD computes, state included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmnist.training.optimizer import PlainSGD


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


def _groups(model: nn.Module) -> list[dict]:
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": 5e-4},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _steps(model: nn.Module, optimizer, count: int, *, start: int = 0) -> None:
    for step in range(start, start + count):
        generator = torch.Generator().manual_seed(step)
        images = torch.rand(8, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * (step + 1) / 5  # a schedule, as training sets it
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.9, True), (0.9, False), (0.0, False)])
def test_same_weights_as_torch_sgd(momentum: float, nesterov: bool) -> None:
    ours, theirs = _model(0), _model(0)
    _steps(ours, PlainSGD(_groups(ours), lr=0.1, momentum=momentum, nesterov=nesterov), 6)
    _steps(theirs, torch.optim.SGD(_groups(theirs), lr=0.1, momentum=momentum, nesterov=nesterov), 6)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_state_round_trips_through_torch_sgd_layout() -> None:
    model = _model(1)
    optimizer = PlainSGD(_groups(model), lr=0.1, momentum=0.9, nesterov=True)
    _steps(model, optimizer, 3)
    # A checkpoint written by torch.optim.SGD loads into PlainSGD and goes on identically.
    reference = _model(1)
    torch_sgd = torch.optim.SGD(_groups(reference), lr=0.1, momentum=0.9, nesterov=True)
    _steps(reference, torch_sgd, 3)
    resumed_model = _model(2)
    resumed_model.load_state_dict(reference.state_dict())
    resumed = PlainSGD(_groups(resumed_model), lr=0.1, momentum=0.9, nesterov=True)
    state = torch_sgd.state_dict()
    resumed.load_state_dict({**state, "state": {str(k): v for k, v in state["state"].items()}})
    assert resumed.state_dict()["param_groups"][0]["params"] == state["param_groups"][0]["params"]
    _steps(reference, torch_sgd, 2, start=3)
    _steps(resumed_model, resumed, 2, start=3)
    for a, b in zip(resumed_model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="other parameter groups"):
        PlainSGD(_groups(model)[:1], lr=0.1, momentum=0.9, nesterov=True).load_state_dict(state)

"""The weight average's warm-up: early on it follows the recent weights, later the decay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fmnist.training import read_config_file, resolve_config, train
from fmnist.training.ema import exponential_moving_average, warmed_up_decay


def test_the_decay_rises_to_the_configured_value() -> None:
    assert warmed_up_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmed_up_decay(0.999, 100) == pytest.approx(101 / 110)
    assert warmed_up_decay(0.999, 9_000) == 0.999
    assert warmed_up_decay(0.9, 100) == 0.9


def test_the_average_uses_the_warmed_up_decay_of_its_update_count() -> None:
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    step = 0
    ema = exponential_moving_average(model, 0.999, updates=lambda: step)
    ema.update_parameters(model)  # the first update copies the weights
    assert torch.equal(ema.module.weight, torch.zeros(1, 2))
    with torch.no_grad():
        model.weight.fill_(1.0)
    step = 1
    ema.update_parameters(model)
    # decay 2/11 after one update, not 0.999: the average moves most of the way.
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 1 - 2 / 11))


def test_a_short_run_with_a_slow_average_learns(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    # 5 epochs of 12 steps: a fixed decay of 0.999 keeps 94% of the random initial weights
    # in the average that is validated and kept (10% validation accuracy at the end); the
    # warmed-up average reaches what the trained weights do (80% here).
    config = resolve_config(
        "seed", file_values=read_config_file(small_config), overrides={"ema_decay": 0.999, "epochs": 5}
    )
    result = train(config, tmp_path / "run", data=learnable_dir)
    assert result.history[-1]["val_accuracy"] >= 0.6

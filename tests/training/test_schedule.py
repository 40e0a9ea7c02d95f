"""Learning-rate schedules: warm-up, the peak and the end of each step-based schedule."""

from __future__ import annotations

import itertools
import math

import pytest

from fmnist.errors import ConfigError
from fmnist.training import resolve_config
from fmnist.training.schedule import scheduled_lr

TOTAL = 1000


def _curve(schedule: str, warmup_fraction: float = 0.2, peak: float = 0.4) -> list[float]:
    return [
        scheduled_lr(schedule, peak=peak, step=step, total_steps=TOTAL, warmup_fraction=warmup_fraction)
        for step in range(TOTAL + 1)
    ]


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_warm_up_rises_from_a_25th_of_the_peak(schedule: str) -> None:
    curve = _curve(schedule)
    assert curve[0] == pytest.approx(0.4 / 25)
    warmup = curve[: 200 + 1]
    assert all(later > earlier for earlier, later in itertools.pairwise(warmup))
    assert curve[200] == pytest.approx(0.4)
    assert max(curve) == pytest.approx(0.4)
    annealing = curve[200:]
    assert all(later <= earlier for earlier, later in itertools.pairwise(annealing))


def test_onecycle_ends_near_zero_and_cosine_at_zero() -> None:
    assert _curve("onecycle")[-1] == pytest.approx(0.4 / 1e4)
    assert _curve("cosine")[-1] == pytest.approx(0.0, abs=1e-12)
    # Half-way through the annealing, cosine is half the peak.
    assert _curve("cosine")[600] == pytest.approx(0.2)


@pytest.mark.parametrize("schedule", ["constant", "plateau"])
def test_flat_schedules_stay_at_the_peak(schedule: str) -> None:
    assert set(_curve(schedule)) == {0.4}


def test_the_warm_up_fraction_sets_where_the_peak_is() -> None:
    curve = _curve("cosine", warmup_fraction=0.05)
    assert curve.index(max(curve)) == 50
    assert all(math.isfinite(lr) and lr >= 0 for lr in curve)


def test_a_negative_gradient_clip_is_refused() -> None:
    with pytest.raises(ConfigError, match="grad_clip must be zero"):
        resolve_config("fast", overrides={"grad_clip": -1.0})

"""Learning-rate schedules whose whole state is a few numbers, so resuming is exact."""

from __future__ import annotations

import math
from dataclasses import dataclass


def scheduled_lr(schedule: str, *, peak: float, step: int, total_steps: int, warmup_fraction: float) -> float:
    """The learning rate at optimizer step ``step`` (0-based) for a step-based schedule.

    onecycle: linear warm-up from peak/25 to peak over ``warmup_fraction`` of the steps,
    then cosine down to peak/1e4 (the shape of Smith & Topin's one-cycle policy).
    cosine: the same warm-up, then cosine down to 0. Without a warm-up a high peak rate
    hits the untrained network at full strength and can leave it at chance level for
    good (fast_cnn at 0.4: 10% validation accuracy, with no NaN to stop on).
    triangle: airbench's, linear from peak/5 up to the peak at ``warmup_fraction`` of the
    steps, then linear down to 0.07 x peak at the end (its Lookahead averages that tail).
    constant and plateau: the peak (plateau scales it per epoch, see PlateauScaler).
    """
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "triangle":
        if progress < warmup_fraction:
            return peak * (0.2 + 0.8 * progress / warmup_fraction)
        return peak * (1 - 0.93 * (progress - warmup_fraction) / (1 - warmup_fraction))
    if schedule not in ("onecycle", "cosine"):
        return peak
    start = peak / 25
    if progress < warmup_fraction:
        return start + (peak - start) * progress / warmup_fraction
    end = peak / 1e4 if schedule == "onecycle" else 0.0
    tail = (progress - warmup_fraction) / (1 - warmup_fraction)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * tail))


@dataclass
class PlateauScaler:
    """Halve the learning rate after ``patience`` epochs without a validation-loss
    improvement (the loss, whatever ``select_on`` picks the kept epoch by)."""

    patience: int
    factor: float = 0.5
    min_scale: float = 1e-3
    scale: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0

    def step(self, val_loss: float) -> None:
        if val_loss < self.best - 1e-4:
            self.best, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.scale = max(self.scale * self.factor, self.min_scale)
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = float(state["scale"]), float(state["best"]), int(state["bad_epochs"])

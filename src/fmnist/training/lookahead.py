"""airbench's Lookahead: the weights are pulled back toward a slow average of themselves.

Every ``every`` steps the slow copy moves toward the current weights by 1 - decay, and
the weights are then set to it. The decay follows airbench's schedule,
0.95^5 * (step / total)^3: near 0 early (the slow copy follows the weights), rising to
~0.77 at the end, so the last epochs average over more and more steps. After the final
step the weights are the slow copy. Float buffers (BatchNorm's running statistics) are
averaged with the weights, as airbench does; integer ones are left to the model.

Its state (the slow copy) is saved in the checkpoint's weight-average slot, so a resumed
run continues exactly.
"""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    def __init__(self, model: nn.Module, *, every: int, total_steps: int) -> None:
        self.model, self.every, self.total_steps = model, every, max(total_steps, 1)
        self.slow = {name: value.detach().clone() for name, value in self._averaged().items()}

    def _averaged(self) -> dict[str, torch.Tensor]:
        return {name: value for name, value in self.model.state_dict().items() if torch.is_floating_point(value)}

    def decay(self, step: int) -> float:
        return 0.95**5 * (step / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Called after optimizer step number ``step`` (1-based count of steps taken)."""
        if step >= self.total_steps:
            self._pull(1.0)  # the run ends on the slow copy
        elif step % self.every == 0:
            self._pull(self.decay(step))

    def _pull(self, decay: float) -> None:
        current = self._averaged()
        for name, slow in self.slow.items():
            slow.lerp_(current[name].to(slow.dtype), 1 - decay)
            current[name].copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.slow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, slow in self.slow.items():
            slow.copy_(state[name])

"""What makes a run resumable: the trainer's state as a checkpoint, what a checkpoint of
this run must hold, restoring from one, and reading back the run's config.

A resumed run ends with the same weights as an uninterrupted one: the model, optimizer,
weight average, early-stopping and plateau state, history and every rank's random
generators are all saved after each epoch and restored exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fmnist.errors import ConfigError, RunError
from fmnist.run import Run
from fmnist.training.checkpoint import (
    ExpectedState,
    TrainingState,
    check_training_state,
    damaged_fix,
)
from fmnist.training.config import TrainConfig
from fmnist.training.distributed import Distributed
from fmnist.training.early_stopping import EarlyStopping
from fmnist.training.features import check_config
from fmnist.training.lookahead import Lookahead
from fmnist.training.run_folder import RunPaths
from fmnist.training.schedule import PlateauScaler


class Resumable:
    """The checkpoint side of the Trainer (training/loop.py), which inherits it: the state
    it saves after each epoch, what a checkpoint of this run must hold, and restoring."""

    config: TrainConfig
    paths: RunPaths
    context: Distributed
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: AveragedModel | None
    lookahead: Lookahead | None
    order_generator: torch.Generator
    augment_generator: torch.Generator
    stopper: EarlyStopping
    plateau: PlateauScaler
    best_model: dict[str, torch.Tensor]
    history: list[dict]
    epochs_done: int
    step: int
    steps_per_epoch: int

    def _rng_state(self) -> dict[str, torch.Tensor]:
        return {
            "torch": torch.get_rng_state(),
            "order": self.order_generator.get_state(),
            "augment": self.augment_generator.get_state(),
        }

    def _average_state(self) -> dict[str, torch.Tensor] | None:
        """The weight average's tensors (the EMA's, or Lookahead's slow copy), saved in the
        checkpoint's weight-average slot; None without one."""
        if self.ema is not None:
            return dict(self.ema.state_dict())
        return self.lookahead.state_dict() if self.lookahead is not None else None

    def state(self) -> TrainingState:
        """The state after the last epoch; collective (every rank takes part)."""
        # Every rank's random state is kept, so a resumed distributed run is exact too.
        rng_by_rank = self.context.all_gather_objects(self._rng_state())
        rng = {f"rank{rank}.{name}": value for rank, states in enumerate(rng_by_rank) for name, value in states.items()}
        return TrainingState(
            epochs_done=self.epochs_done,
            step=self.step,
            model=dict(self.model.state_dict()),
            optimizer=self.optimizer.state_dict(),
            best_model=self.best_model,
            ema=self._average_state(),
            rng=rng,
            early_stopping=self.stopper.state_dict(),
            plateau=self.plateau.state_dict(),
            history=self.history,
            config=self.config.to_dict(),
        )

    def expected_state(self) -> ExpectedState:
        """What this run's checkpoint must hold: names, shapes and dtypes of this freshly
        built trainer's state, every rank's generators, the run's counters and config."""
        rng = {
            f"rank{rank}.{name}": value
            for rank in range(self.context.world_size)
            for name, value in self._rng_state().items()
        }
        return ExpectedState(
            epochs=self.config.epochs,
            steps_per_epoch=self.steps_per_epoch,
            model=dict(self.model.state_dict()),
            best_model=self.best_model,
            ema=self._average_state(),
            rng=rng,
            optimizer=self.optimizer.state_dict(),
            parameter_shapes=[p.shape for group in self.optimizer.param_groups for p in group["params"]],
            config=self.config.to_dict(),
        )

    def restore(self, state: TrainingState) -> None:
        """Continue from ``state`` after checking that it fits this run exactly."""
        path = self.paths.last_checkpoint
        check_training_state(path, state, self.expected_state())
        prefix = f"rank{self.context.rank}."
        try:
            self.model.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            if self.ema is not None and state.ema is not None:
                self.ema.load_state_dict(state.ema)
            if self.lookahead is not None and state.ema is not None:
                self.lookahead.load_state_dict(state.ema)
            torch.set_rng_state(state.rng[prefix + "torch"])
            self.order_generator.set_state(state.rng[prefix + "order"])
            self.augment_generator.set_state(state.rng[prefix + "augment"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            # The checks above cover what fmnist writes; this names anything they missed.
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise RunError(f"{path}: cannot be restored ({first})", damaged_fix(path)) from None
        self.best_model = state.best_model
        self.stopper.load_state_dict(state.early_stopping)
        self.plateau.load_state_dict(state.plateau)
        self.epochs_done, self.step, self.history = state.epochs_done, state.step, list(state.history)


def read_run_config(paths: RunPaths) -> TrainConfig:
    """The run's config.json as a validated TrainConfig (Run.config), the settings of its
    features checked too; a RunError naming the file."""
    config = Run.create(paths.root).config()
    try:
        check_config(config)
    except ConfigError as error:
        raise RunError(f"{paths.config}: {error.problem}", "restore the run's config.json, or start a new run in another folder") from None
    return config

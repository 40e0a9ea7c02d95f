"""The training function: one loop for every recipe, checkpointed after every epoch."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from fmnist.augment import augment_batch
from fmnist.data.contract import to_model_input
from fmnist.errors import FmnistError, RunError
from fmnist.files import atomic_write_json, atomic_write_text
from fmnist.models import ModelCard, create_model, save_model
from fmnist.models.forward import predict_logits
from fmnist.training.checkpoint import TrainingState, load_training_state, save_training_state
from fmnist.training.config import TrainConfig, config_from_dict, dump_config
from fmnist.training.data_prep import TrainingData, prepare_data
from fmnist.training.early_stopping import EarlyStopping
from fmnist.training.run_folder import RunPaths, provenance
from fmnist.training.schedule import PlateauScaler, scheduled_lr

log = logging.getLogger(__name__)
DATA_INIT_IMAGES = 5000  # training images a data-dependent initialisation may look at


class TrainingDiverged(FmnistError):
    """The loss became NaN or infinite."""


@dataclass
class EpochEnd:
    """What a per-epoch callback receives. ``model`` is the one validated (EMA if enabled)."""

    record: dict
    model: nn.Module
    config: TrainConfig


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    history: list[dict]
    best_epoch: int  # 1-based
    stopped_early: bool
    model: nn.Module  # best weights, eval mode


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters (1-D tensors): decaying them only
    # fights the normalisation.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    full, rest = divmod(num_images, batch_size)
    # A final batch of one image is dropped: BatchNorm cannot normalise it.
    return full + (1 if rest > 1 else 0)


@torch.inference_mode()
def validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> tuple[float, float]:
    model.eval()
    # Validation predicts the way the finished model will (with flip TTA if configured),
    # so the epoch chosen is the one that is best as deployed.
    logits = predict_logits(
        model, images, batch_size=config.eval_batch_size, channels_last=config.channels_last, tta_flip=config.tta_flip
    )
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


class Trainer:
    """Holds the mutable state of one run; ``fit`` runs the remaining epochs."""

    def __init__(self, config: TrainConfig, paths: RunPaths, data: TrainingData, *, progress: bool) -> None:
        self.config = config
        self.paths = paths
        self.data = data
        self.progress = progress
        torch.manual_seed(config.seed)  # dropout and weight initialisation
        self.model = create_model(config.model, **config.model_args)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        fit_to_data = getattr(self.model, "fit_to_data", None)
        if fit_to_data is not None:
            # Data-dependent initialisation (e.g. a whitening stem) from training images only.
            fit_to_data(to_model_input(data.train_images[:DATA_INIT_IMAGES]))
        self.optimizer = make_optimizer(self.model, config)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay > 0
            else None
        )
        # Two generators: batch order, and augmentation. Both are saved in checkpoints.
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1)
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.plateau = PlateauScaler(config.plateau_patience)
        self.epochs_done = 0
        self.step = 0
        self.history: list[dict] = []
        self.best_model = {k: v.clone() for k, v in self.evaluated_model.state_dict().items()}
        self.steps_per_epoch = steps_per_epoch(len(data.train_labels), config.batch_size)

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    # -- state ---------------------------------------------------------------------------
    def state(self) -> TrainingState:
        return TrainingState(
            epochs_done=self.epochs_done,
            step=self.step,
            model=dict(self.model.state_dict()),
            optimizer=self.optimizer.state_dict(),
            best_model=self.best_model,
            ema=dict(self.ema.state_dict()) if self.ema is not None else None,
            rng={
                "torch": torch.get_rng_state(),
                "order": self.order_generator.get_state(),
                "augment": self.augment_generator.get_state(),
            },
            early_stopping=self.stopper.state_dict(),
            plateau=self.plateau.state_dict(),
            history=self.history,
            config=self.config.to_dict(),
        )

    def restore(self, state: TrainingState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if self.ema is not None and state.ema is not None:
            self.ema.load_state_dict(state.ema)
        self.best_model = state.best_model
        torch.set_rng_state(state.rng["torch"])
        self.order_generator.set_state(state.rng["order"])
        self.augment_generator.set_state(state.rng["augment"])
        self.stopper.load_state_dict(state.early_stopping)
        self.plateau.load_state_dict(state.plateau)
        self.epochs_done, self.step, self.history = state.epochs_done, state.step, list(state.history)

    # -- one epoch -----------------------------------------------------------------------
    def _set_lr(self) -> float:
        total = self.steps_per_epoch * self.config.epochs
        lr = scheduled_lr(
            self.config.schedule,
            peak=self.config.lr,
            step=self.step,
            total_steps=total,
            warmup_fraction=self.config.warmup_fraction,
        ) * self.plateau.scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_one_epoch(self) -> tuple[float, float, float]:
        """Returns (mean train loss, train accuracy on augmented batches, last lr)."""
        config, data = self.config, self.data
        self.model.train()
        order = torch.randperm(len(data.train_labels), generator=self.order_generator)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        seen = 0
        lr = self._set_lr()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.epochs_done + 1}/{config.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        with bar:
            for index in range(self.steps_per_epoch):
                batch = order[index * config.batch_size : (index + 1) * config.batch_size]
                images = augment_batch(
                    to_model_input(data.train_images[batch]), config.augment, generator=self.augment_generator
                )
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = data.train_labels[batch]
                lr = self._set_lr()
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.step += 1
                loss_sum += loss.detach() * len(batch)
                correct += (logits.detach().argmax(1) == labels).sum()
                seen += len(batch)
                if index % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
        mean_loss = (loss_sum / max(seen, 1)).item()
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"the training loss became {mean_loss} in epoch {self.epochs_done + 1}",
                f"lower the learning rate (--lr, now {config.lr}); the last good epoch is kept in "
                f"{self.paths.last_checkpoint}",
            )
        return mean_loss, (correct.float() / max(seen, 1)).item(), lr

    def fit(self, on_epoch: Callable[[EpochEnd], None] | None = None) -> None:
        """Run epochs until the maximum or early stopping, checkpointing after each."""
        while self.epochs_done < self.config.epochs and not self.stopper.should_stop:
            started = time.perf_counter()
            train_loss, train_accuracy, lr = self.train_one_epoch()
            train_seconds = time.perf_counter() - started
            val_loss, val_accuracy = validate(
                self.evaluated_model, self.data.val_images, self.data.val_labels, self.config
            )
            self.epochs_done += 1
            improved = self.stopper.update(self.epochs_done, val_loss)
            if improved:
                self.best_model = {k: v.clone() for k, v in self.evaluated_model.state_dict().items()}
            if self.config.schedule == "plateau":
                self.plateau.step(val_loss)
            record = {
                "epoch": self.epochs_done,
                "train_loss": round(train_loss, 6),
                "train_accuracy": round(train_accuracy, 6),
                "val_loss": round(val_loss, 6),
                "val_accuracy": round(val_accuracy, 6),
                "lr": lr,
                "seconds": round(time.perf_counter() - started, 3),
                "images_per_second": round(len(self.data.train_labels) / train_seconds, 1),
                "best": improved,
            }
            self.history.append(record)
            save_training_state(self.paths.last_checkpoint, self.state())
            write_epochs_log(self.paths, self.history)
            log.info(format_epoch(record, self.config.epochs))
            if on_epoch is not None:
                on_epoch(EpochEnd(record=record, model=self.evaluated_model, config=self.config))

    def finish(self) -> nn.Module:
        """Load the best weights and write the final, self-describing model file."""
        best = create_model(self.config.model, **self.config.model_args)
        best.load_state_dict(self.best_model)
        best.eval()
        card = ModelCard(
            model=self.config.model,
            model_args=dict(self.config.model_args),
            tta_flip=self.config.tta_flip,
            extra={
                "run": self.paths.root.name,
                "recipe": self.config.recipe,
                "best_epoch": self.stopper.best_epoch,
                "epochs": self.epochs_done,
                "seed": self.config.seed,
            },
        )
        save_model(self.paths.best_checkpoint, best, card)
        save_model(self.paths.model, best, card)
        return best


def format_epoch(record: dict, epochs: int) -> str:
    return (
        f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}  val loss {record['val_loss']:.4f} "
        f"acc {record['val_accuracy']:.4f}  lr {record['lr']:.2e}  {record['seconds']:.1f}s "
        f"({record['images_per_second']:.0f} img/s){'  *' if record['best'] else ''}"
    )


def write_epochs_log(paths: RunPaths, history: list[dict]) -> None:
    # Rewritten whole from the checkpointed history, so it never holds an epoch that the
    # checkpoint does not (a kill between the two writes is harmless).
    atomic_write_text(paths.epochs_log, "".join(json.dumps(record) + "\n" for record in history))


def _set_threads(config: TrainConfig) -> int:
    threads = config.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def _run(
    config: TrainConfig,
    paths: RunPaths,
    state: TrainingState | None,
    data: str | os.PathLike[str] | None,
    *,
    progress: bool,
    on_epoch: Callable[[EpochEnd], None] | None,
) -> TrainResult:
    threads = _set_threads(config)
    training_data = prepare_data(config, data, progress=progress)
    trainer = Trainer(config, paths, training_data, progress=progress)
    if state is None:
        log.info(
            "training %s (recipe %s, seed %d) on %d images, validating on %d; run folder %s",
            config.model, config.recipe, config.seed, len(training_data.train_labels),
            len(training_data.val_labels), paths.root,
        )
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.config, dump_config(config))
        atomic_write_json(paths.provenance, {**provenance(threads), "data": training_data.description})
    else:
        trainer.restore(state)
        log.info("resuming %s after epoch %d", paths.root, trainer.epochs_done)
    trainer.fit(on_epoch)
    best = trainer.finish()
    return TrainResult(
        run_dir=paths.root,
        config=config,
        history=trainer.history,
        best_epoch=trainer.stopper.best_epoch,
        stopped_early=trainer.stopper.should_stop,
        model=best,
    )


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_epoch: Callable[[EpochEnd], None] | None = None,
) -> TrainResult:
    """Train a new run into ``run_dir`` (which must not hold a run yet)."""
    config.validate()
    paths = RunPaths(Path(run_dir))
    if paths.config.exists():
        raise RunError(
            f"{paths.root} already holds a run", f"continue it with --resume {paths.root}, or choose another --out"
        )
    return _run(config, paths, None, data, progress=progress, on_epoch=on_epoch)


def resume(
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_epoch: Callable[[EpochEnd], None] | None = None,
) -> TrainResult:
    """Continue an interrupted run from its last checkpoint; ends with the same weights as
    an uninterrupted run with the same config."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise RunError(f"{paths.root}: not a run folder (no config.json)", "pass the folder that `fmnist train` created")
    try:
        config = config_from_dict(json.loads(paths.config.read_text()))
    except json.JSONDecodeError:
        raise RunError(f"{paths.config}: corrupt", "start a new run") from None
    state = load_training_state(paths.last_checkpoint) if paths.last_checkpoint.exists() else None
    return _run(config, paths, state, data, progress=progress, on_epoch=on_epoch)

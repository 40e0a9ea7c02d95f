"""The training function: one loop for every recipe, checkpointed after every epoch.

Runs in one process, or data-parallel under `torchrun` (see distributed.py): each rank
trains on its shard of every epoch's batches, metrics are summed across ranks, and only
rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
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
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fmnist.augment import augment_batch
from fmnist.cpus import ThreadChoice, choose_threads
from fmnist.data.classes import NUM_CLASSES
from fmnist.data.contract import to_model_input
from fmnist.errors import ConfigError, DiskFullError, FmnistError, RunError
from fmnist.files import atomic_write_json, atomic_write_text, remove_stale_temporaries
from fmnist.inference.predictor import TorchPredictor
from fmnist.models import ModelCard, create_model, save_model
from fmnist.training import distributed
from fmnist.training.checkpoint import (
    ExpectedState,
    TrainingState,
    check_training_state,
    damaged_fix,
    load_training_state,
    save_training_state,
)
from fmnist.training.config import TrainConfig, config_from_dict, dump_config
from fmnist.training.data_prep import TrainingData, prepare_data
from fmnist.training.distributed import Distributed
from fmnist.training.early_stopping import EarlyStopping
from fmnist.training.ema import exponential_moving_average
from fmnist.training.precision import autocast, autocast_dtype
from fmnist.training.run_folder import RunPaths, locked, provenance
from fmnist.training.schedule import PlateauScaler, scheduled_lr
from fmnist.training.specialist import (
    fit_combination_weight,
    specialist_card,
    start_name,
)
from fmnist.training.transfer import (
    check_start,
    initialise_weights,
    lr_scale,
    parameter_groups,
)

log = logging.getLogger(__name__)
DATA_INIT_IMAGES = 5000  # training images a data-dependent initialisation may look at


class TrainingDiverged(FmnistError):
    """The loss became NaN or infinite."""


class StopTraining(Exception):
    """Raised by a per-epoch callback to end the run after this epoch, as early stopping
    does: the best epoch so far is kept and the model file written (``fmnist tune``'s time
    budget and pruner stop trials so)."""


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
    model: nn.Module  # best weights, eval mode, on the CPU
    is_main: bool = True  # False on the other ranks of a distributed run


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters (1-D tensors): decaying them only
    # fights the normalisation. Transfer settings split backbone and head (transfer.py).
    groups = parameter_groups(model, config)
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
def validate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, context: Distributed
) -> tuple[float, float]:
    """(mean loss, accuracy) on the validation images; each rank takes a share, summed."""
    model.eval()
    shard = slice(context.rank, None, context.world_size)
    # Validation predicts the way the finished model will (with flip TTA if configured),
    # so the epoch chosen is the one that is best as deployed.
    predictor = TorchPredictor.of_module(model, tta_flip=config.tta_flip, channels_last=config.channels_last, check_finite=False)
    logits = torch.from_numpy(predictor.logits(images[shard].cpu().numpy(), batch_size=config.eval_batch_size))
    shard_labels = labels[shard].cpu()
    sums = torch.tensor(
        [
            F.cross_entropy(logits, shard_labels, reduction="sum").item(),
            (logits.argmax(1) == shard_labels).sum().item(),
            float(len(logits)),
        ],
        dtype=torch.float64,
    )
    loss_sum, correct, count = context.all_reduce_sum(sums).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


class Trainer:
    """Holds the mutable state of one run; ``fit`` runs the remaining epochs."""

    def __init__(
        self,
        config: TrainConfig,
        paths: RunPaths,
        data: TrainingData,
        context: Distributed,
        *,
        progress: bool,
        fresh: bool = True,
    ) -> None:
        self.config, self.paths, self.data, self.context = config, paths, data, context
        self.progress = progress and context.is_main
        torch.manual_seed(config.seed)  # weight initialisation: identical on every rank
        self.model = create_model(config.model, **config.model_args)
        fit_to_data = getattr(self.model, "fit_to_data", None)
        if fit_to_data is not None:
            # Data-dependent initialisation (e.g. a whitening stem) from training images only.
            fit_to_data(to_model_input(data.train_images[:DATA_INIT_IMAGES]))
        if fresh:  # a resumed run restores its own weights instead
            initialise_weights(self.model, config)
        self.model = self.model.to(context.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, config)
        self.autocast_dtype = autocast_dtype(context.device, config.amp)  # None: float32
        # The average is updated once per step, after the first copies the weights: when
        # it is updated at step s (0-based, before the count moves on) it has had s updates.
        self.ema = (
            exponential_moving_average(self.model, config.ema_decay, updates=lambda: self.step)
            if config.ema_decay > 0
            else None
        )
        self.trained = DistributedDataParallel(self.model) if context.enabled else self.model
        # Batch order is the same on every rank (each takes its share); augmentation and
        # dropout differ per rank. All generators are saved in checkpoints.
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1 + 1000 * context.rank)
        torch.manual_seed(config.seed + 1000 * context.rank)
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.plateau = PlateauScaler(config.plateau_patience)
        self.epochs_done = 0
        self.step = 0
        self.warned_at_chance = False
        self.history: list[dict] = []
        self.best_model = self._snapshot()
        # Each rank trains on 1/world of the images with 1/world of the batch, so the
        # global batch, the number of steps and the schedule match a single process.
        self.local_batch = max(1, config.batch_size // context.world_size)
        self.steps_per_epoch = steps_per_epoch(len(data.train_labels) // context.world_size, self.local_batch)

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.evaluated_model.state_dict().items()}

    # -- state ---------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, torch.Tensor]:
        return {
            "torch": torch.get_rng_state(),
            "order": self.order_generator.get_state(),
            "augment": self.augment_generator.get_state(),
        }

    def state(self) -> TrainingState:
        # Every rank's random state is kept, so a resumed distributed run is exact too.
        rng_by_rank = self.context.all_gather_objects(self._rng_state())
        rng = {f"rank{rank}.{name}": value for rank, states in enumerate(rng_by_rank) for name, value in states.items()}
        return TrainingState(
            epochs_done=self.epochs_done,
            step=self.step,
            model=dict(self.model.state_dict()),
            optimizer=self.optimizer.state_dict(),
            best_model=self.best_model,
            ema=dict(self.ema.state_dict()) if self.ema is not None else None,
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
            ema=dict(self.ema.state_dict()) if self.ema is not None else None,
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
            group["lr"] = lr * lr_scale(group, self.config, self.epochs_done)
        return lr

    def train_one_epoch(self) -> tuple[float, float, float]:
        """Returns (mean train loss, train accuracy on augmented batches, last lr), over all ranks."""
        config, data, context = self.config, self.data, self.context
        self.model.train()
        order = torch.randperm(len(data.train_labels), generator=self.order_generator)
        order = order[: len(order) - len(order) % context.world_size][context.rank :: context.world_size]
        loss_sum = torch.zeros((), device=context.device)
        correct = torch.zeros((), dtype=torch.long, device=context.device)
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
                batch = order[index * self.local_batch : (index + 1) * self.local_batch]
                images = augment_batch(
                    to_model_input(data.train_images[batch]), config.augment, generator=self.augment_generator
                ).to(context.device, non_blocking=True)
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = data.train_labels[batch].to(context.device, non_blocking=True)
                lr = self._set_lr()
                with autocast(self.context.device, self.autocast_dtype):
                    logits = self.trained(images)
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    # After backward, so under DDP the norm is that of the all-reduced gradient.
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip, foreach=True)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.step += 1
                # Accumulated on the device: no host synchronisation per step.
                loss_sum += loss.detach() * len(batch)
                correct += (logits.detach().argmax(1) == labels).sum()
                seen += len(batch)
                if self.progress and index % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update(1)
        totals = torch.tensor([loss_sum.item(), correct.item(), seen], dtype=torch.float64)
        total_loss, total_correct, total_seen = self.context.all_reduce_sum(totals).tolist()
        mean_loss = total_loss / max(total_seen, 1)
        if not math.isfinite(mean_loss):
            raise self._diverged("training", mean_loss, self.epochs_done + 1)
        return mean_loss, total_correct / max(total_seen, 1), lr

    def _diverged(self, which: str, loss: float, epoch: int) -> TrainingDiverged:
        # A first-epoch divergence leaves no run behind (_forget_unstarted_run), so the same
        # --out takes the retry; a later one keeps its good epochs' checkpoint.
        kept = (
            f" and another --out (the state after epoch {self.epochs_done} is kept in {self.paths.last_checkpoint})"
            if self.epochs_done
            else ""
        )
        return TrainingDiverged(
            f"the {which} loss became {loss} in epoch {epoch}",
            f"train again with a lower learning rate (--lr, now {self.config.lr:g}){kept}",
        )

    def fit(self, on_epoch: Callable[[EpochEnd], None] | None = None) -> None:
        """Run epochs until the maximum or early stopping, checkpointing after each."""
        stop_requested = False
        while self.epochs_done < self.config.epochs and not self.stopper.should_stop and not stop_requested:
            started = time.perf_counter()
            train_loss, train_accuracy, lr = self.train_one_epoch()
            train_seconds = time.perf_counter() - started
            self.epochs_done += 1
            record = {
                "epoch": self.epochs_done,
                "train_loss": round(train_loss, 6),
                "train_accuracy": round(train_accuracy, 6),
            }
            # Every rank validates (and later saves) rank 0's BatchNorm statistics.
            self.context.broadcast_buffers(self.evaluated_model)
            if len(self.data.val_labels):
                val_loss, val_accuracy = validate(
                    self.evaluated_model, self.data.val_images, self.data.val_labels, self.config, self.context
                )
                if not math.isfinite(val_loss):  # e.g. weights that overflow only in the average
                    raise self._diverged("validation", val_loss, self.epochs_done)
                # The stopper minimises; accuracy is watched as its complement.
                watched = val_loss if self.config.select_on == "val_loss" else 1.0 - val_accuracy
                improved = self.stopper.update(self.epochs_done, watched)
                if self.config.schedule == "plateau":
                    self.plateau.step(val_loss)
                record.update(val_loss=round(val_loss, 6), val_accuracy=round(val_accuracy, 6))
                self._warn_if_at_chance(val_accuracy, train_loss)
            else:
                # No validation split (--full): the fixed schedule decides; keep the last epoch.
                improved = self.stopper.update(self.epochs_done, -float(self.epochs_done))
                record.update(val_loss=None, val_accuracy=None)
            if improved:
                self.best_model = self._snapshot()
            record.update(
                lr=lr,
                seconds=round(time.perf_counter() - started, 3),
                images_per_second=round(len(self.data.train_labels) / train_seconds, 1),
                best=improved,
            )
            self.history.append(record)
            state = self.state()  # collective: every rank takes part
            if self.context.is_main:
                save_training_state(self.paths.last_checkpoint, state)
                write_epochs_log(self.paths, self.history)
                log.info(format_epoch(record, self.config.epochs))
                if on_epoch is not None:
                    try:
                        on_epoch(EpochEnd(record=record, model=self.evaluated_model, config=self.config))
                    except StopTraining as stop:
                        log.info("stopped after epoch %d: %s", self.epochs_done, stop)
                        stop_requested = True
            # Only rank 0 runs the callback: every rank learns whether it asked to stop.
            flag = torch.tensor([float(stop_requested)], dtype=torch.float64)
            stop_requested = self.context.all_reduce_sum(flag).item() > 0
            self.context.barrier()

    def _warn_if_at_chance(self, val_accuracy: float, train_loss: float) -> None:
        """A finite loss is no proof of learning: too high a rate for the run's number of
        steps can leave the network guessing for good. Say so once, while there is time.

        Both signs are required: validation accuracy at chance, and a training loss no
        better than the uniform guess's ln(classes) (label smoothing does not change that
        figure). A model that is merely slow to start, or a weight average still behind
        the weights, has the first without the second."""
        classes = int(self.data.train_labels.max()) + 1
        uniform_loss = math.log(classes)
        if (
            self.epochs_done < 2
            or self.warned_at_chance
            or val_accuracy > 1.5 / classes
            or train_loss < 0.9 * uniform_loss
        ):
            return
        self.warned_at_chance = True
        if self.context.is_main:
            log.warning(
                "validation accuracy is %.1f%% after %d epochs, chance level for %d classes, and the training loss "
                "%.2f is no better than guessing (%.2f): the model is not learning; lower the learning rate "
                "(--lr, now %g) or train on more images",
                100 * val_accuracy, self.epochs_done, classes, train_loss, uniform_loss, self.config.lr,
            )

    def finish(self) -> nn.Module:
        """Load the best weights and (rank 0) write the final, self-describing model file."""
        best = create_model(self.config.model, **self.config.model_args)
        best.load_state_dict(self.best_model)
        best.eval()
        if self.context.is_main:
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
                    "full": self.config.full,
                },
            )
            if self.config.specialist is not None:
                card.class_names, card.extra["specialist"] = specialist_card(
                    self.config.specialist, self.config.base_run, run_dir=self.paths.root
                )
                weight = fit_combination_weight(best, self.config, self.data.val_images, self.data.val_labels)
                card.extra["specialist"]["weight"] = 1.0 if weight is None else weight
                card.extra["specialist"]["weight_fitted_on"] = "validation" if weight is not None else None
            start = self.config.pretrained or self.config.init_run
            if start is not None:
                card.extra["initialised_from"] = start_name(start)
            # The one final model. The best weights during training live in the training
            # checkpoint (checkpoints/last.safetensors, for resuming); no second model file.
            save_model(self.paths.model, best, card)
        self.context.barrier()
        return best


def format_epoch(record: dict, epochs: int) -> str:
    validation = (
        f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
        if record["val_loss"] is not None
        else "no validation (full)"
    )
    return (
        f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}  {validation}  lr {record['lr']:.2e}  {record['seconds']:.1f}s "
        f"({record['images_per_second']:.0f} img/s){'  *' if record['best'] else ''}"
    )


def write_epochs_log(paths: RunPaths, history: list[dict]) -> None:
    # Rewritten whole from the checkpointed history, so it never holds an epoch that the
    # checkpoint does not (a kill between the two writes is harmless).
    atomic_write_text(paths.epochs_log, "".join(json.dumps(record) + "\n" for record in history))


def _set_threads(config: TrainConfig) -> ThreadChoice:
    # Not os.cpu_count(): that ignores taskset, cgroup quotas and OMP_NUM_THREADS (cpus.py).
    choice = choose_threads(config.threads)
    torch.set_num_threads(choice.threads)
    return choice


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
    context = distributed.setup(config.device)
    try:
        training_data = prepare_data(config, data, progress=progress and context.is_main)
        trainer = Trainer(config, paths, training_data, context, progress=progress, fresh=state is None)
        if state is None:
            if context.is_main:
                log.info(
                    "training %s (recipe %s, seed %d) on %d images, validating on %d; %d process(es); run folder %s",
                    config.model, config.recipe, config.seed, len(training_data.train_labels),
                    len(training_data.val_labels), context.world_size, paths.root,
                )
                paths.root.mkdir(parents=True, exist_ok=True)
                atomic_write_text(paths.config, dump_config(config))
                run_info = {
                    **provenance(threads.threads),
                    "torch_threads_from": threads.source,
                    "processes": context.world_size,
                    "device": str(context.device),
                    "autocast": str(trainer.autocast_dtype or "off"),
                }
                atomic_write_json(paths.provenance, {**run_info, "data": training_data.description})
        else:
            trainer.restore(state)
            if context.is_main:
                log.info("resuming %s after epoch %d", paths.root, trainer.epochs_done)
        try:
            trainer.fit(on_epoch)
        except TrainingDiverged:
            if context.is_main and trainer.epochs_done == 0 and state is None:
                _forget_unstarted_run(paths)
            raise
        best = trainer.finish()
        return TrainResult(
            run_dir=paths.root,
            config=config,
            history=trainer.history,
            best_epoch=trainer.stopper.best_epoch,
            stopped_early=trainer.stopper.should_stop,
            model=best,
            is_main=context.is_main,
        )
    except DiskFullError as error:
        again = f"fmnist train --resume {paths.root}" if paths.config.exists() else "run the command again"
        raise DiskFullError(error.problem, f"free space, then {again}") from None
    finally:
        distributed.shutdown(context)


def _forget_unstarted_run(paths: RunPaths) -> None:
    """Remove what a run that diverged in its first epoch wrote (config, provenance): no
    epoch to resume from, and the same --out must take the retry with a lower rate."""
    for path in (paths.config, paths.provenance, paths.epochs_log):
        path.unlink(missing_ok=True)
    try:
        paths.root.rmdir()  # only when empty: never what was there before
    except OSError:
        pass


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_epoch: Callable[[EpochEnd], None] | None = None,
) -> TrainResult:
    """Train a new run into ``run_dir``: a new or empty folder, or an interrupted run of
    this same config, which is continued as ``resume`` would. A folder holding other
    files, a finished run or a run of another config is refused."""
    config.validate()
    paths = RunPaths(Path(run_dir))
    _check_out_folder(config, paths)
    if config.base_run is not None:
        check_base_run(config.base_run)
        warn_if_split_differs(config)
    check_start(config)
    with _run_lock(paths):
        # Checked again under the lock: another process may have started a run here since.
        if _check_out_folder(config, paths):
            log.info("continuing the interrupted run in %s (same config)", paths.root)
            return _resume_locked(paths, data, progress=progress, on_epoch=on_epoch)
        _remove_stale_temporaries(paths)
        return _run(config, paths, None, data, progress=progress, on_epoch=on_epoch)


def _check_out_folder(config: TrainConfig, paths: RunPaths) -> bool:
    """Refuse an --out that training would damage; True when it holds an interrupted run
    of ``config`` (to continue), False when it is new or empty."""
    root = paths.root
    if root.exists() and not root.is_dir():
        raise RunError(f"--out {root} is a file, not a folder", "choose a new folder for the run")
    if not paths.config.exists():
        if not paths.is_empty():
            raise RunError(
                f"--out {root} is not empty and holds no run: training would overwrite its files",
                "choose a new or empty folder",
            )
        return False
    try:
        saved = json.loads(paths.config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        saved = None
    wanted = json.loads(dump_config(config))
    if saved != wanted:
        differing = (
            [key for key in sorted(set(wanted) | set(saved)) if saved.get(key) != wanted.get(key)]
            if isinstance(saved, dict)
            else ["everything: its config.json is unreadable"]
        )
        raise RunError(
            f"{root} already holds a run of another config (differs in {', '.join(differing[:6])})",
            f"continue it with --resume {root}, or choose a new --out",
        )
    if paths.model.exists():
        raise RunError(
            f"{root} already holds a run of this config, finished",
            f"evaluate it with fmnist evaluate {root}, or choose a new --out",
        )
    return True


def _writes_run_folder() -> bool:
    """Rank 0 under torchrun, or a single process (known before the process group is joined)."""
    return os.environ.get("RANK", "0") == "0"


def _run_lock(paths: RunPaths) -> contextlib.AbstractContextManager:
    return locked(paths) if _writes_run_folder() else contextlib.nullcontext()


def _remove_stale_temporaries(paths: RunPaths) -> None:
    # Safe under the lock: no other process writes into this folder.
    if _writes_run_folder():
        removed = remove_stale_temporaries(paths.writable_folders())
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", len(removed))


def check_base_run(base_run: str) -> None:
    """Refuse a specialist's base before training: it must be a finished ten-class run."""
    from fmnist.models.saved import resolve_model_path
    from fmnist.tensorfile import load_tensor_file

    try:
        _, document = load_tensor_file(resolve_model_path(base_run))
    except RunError as error:
        raise RunError(f"--base: {error.problem}", error.fix) from None
    if len(document.get("class_names", [])) != NUM_CLASSES:
        raise RunError(
            f"--base {base_run}: not a ten-class model ({len(document.get('class_names', []))} classes)",
            "pass the main model's run folder, not a specialist's",
        )


def warn_if_split_differs(config: TrainConfig) -> None:
    """A specialist validates on the base's validation images of its group only when it
    splits the training data as the base did; otherwise some of its validation images
    were training images of the base (and of an --init run from it)."""
    base_config = Path(config.base_run) / "config.json"
    if not base_config.is_file():
        return
    base = json.loads(base_config.read_text())
    differing = [
        f"{name} {base.get(name)!r} (base) vs {getattr(config, name)!r}"
        for name in ("seed", "val_fraction", "subset")
        if base.get(name) != getattr(config, name)
    ]
    if differing:
        log.warning(
            "the specialist splits the data differently from its base run (%s): its validation "
            "figures may be optimistic; pass the base run's --seed/--val-fraction/--subset",
            "; ".join(differing),
        )


def resume(
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_epoch: Callable[[EpochEnd], None] | None = None,
) -> TrainResult:
    """Continue an interrupted run from its last checkpoint; ends with the same weights as
    an uninterrupted run with the same config. The run's config.json and checkpoint are
    validated first; stale temporary files of writes the interruption cut short are removed."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise RunError(f"{paths.root}: not a run folder (no config.json)", "pass the folder that `fmnist train` created")
    with _run_lock(paths):
        return _resume_locked(paths, data, progress=progress, on_epoch=on_epoch)


def _resume_locked(
    paths: RunPaths,
    data: str | os.PathLike[str] | None,
    *,
    progress: bool,
    on_epoch: Callable[[EpochEnd], None] | None,
) -> TrainResult:
    config = read_run_config(paths)
    _remove_stale_temporaries(paths)
    state = load_training_state(paths.last_checkpoint) if paths.last_checkpoint.exists() else None
    return _run(config, paths, state, data, progress=progress, on_epoch=on_epoch)


def read_run_config(paths: RunPaths) -> TrainConfig:
    """The run's config.json as a validated TrainConfig; a RunError naming the file."""
    fix = "restore the run's config.json, or start a new run with --out"
    try:
        values = json.loads(paths.config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise RunError(f"{paths.config}: not valid JSON", fix) from None
    try:
        return config_from_dict(values)
    except ConfigError as error:
        raise RunError(f"{paths.config}: {error.problem}", fix) from None

"""The training function: one loop for every recipe, checkpointed after every epoch.

``train()`` checks the run folder and the config's features (training/hooks.py), prepares
the data, builds a ``Trainer`` and runs its epochs; ``resume()`` continues an interrupted
run. Runs in one process, or data-parallel under `torchrun` (see distributed.py): each rank
trains on its shard of every epoch's batches, metrics are summed across ranks, and only
rank 0 writes the run folder.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fmnist.augment import augment_batch_with_views
from fmnist.cpus import ThreadChoice, choose_threads
from fmnist.data.contract import to_model_input
from fmnist.errors import DiskFullError, RunError
from fmnist.models import ModelCard, create_model, save_model
from fmnist.run import Run
from fmnist.training import distributed
from fmnist.training.checkpoint import (
    TrainingState,
    load_training_state,
    save_training_state,
)
from fmnist.training.config import TrainConfig
from fmnist.training.data_prep import (
    TrainingData,
    check_resumed_classes,
    model_args_for,
    prepare_data,
)
from fmnist.training.distributed import Distributed
from fmnist.training.divergence import ChanceWatch, TrainingDiverged, diverged
from fmnist.training.early_stopping import EarlyStopping
from fmnist.training.ema import exponential_moving_average
from fmnist.training.epoch_log import format_epoch, write_epochs_log
from fmnist.training.events import EpochEnd, OnEpoch, StopTraining, TrainResult
from fmnist.training.features import check_config, features_for
from fmnist.training.lookahead import Lookahead
from fmnist.training.optimizer import make_optimizer, set_learning_rate, steps_per_epoch
from fmnist.training.out_folder import (
    check_out_folder,
    forget_unstarted_run,
    remove_stale_files,
    run_lock,
    start_run_folder,
)
from fmnist.training.precision import autocast, autocast_dtype
from fmnist.training.resume import Resumable, read_run_config
from fmnist.training.run_folder import RunPaths
from fmnist.training.schedule import PlateauScaler
from fmnist.training.validation import validate

log = logging.getLogger(__name__)
DATA_INIT_IMAGES = 5000  # training images a data-dependent initialisation may look at
__all__ = ["EpochEnd", "StopTraining", "TrainResult", "Trainer", "TrainingDiverged", "resume", "train"]


class Trainer(Resumable):
    """Holds the mutable state of one run; ``fit`` runs the remaining epochs. Saving and
    restoring that state is ``Resumable``'s (resume.py)."""

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
        self.features = features_for(config)
        self.progress = progress and context.is_main
        torch.manual_seed(config.seed)  # weight initialisation: identical on every rank
        self.model_args = model_args_for(config, data.class_names)  # one output per class of the data
        self.model = create_model(config.model, **self.model_args)
        fit_to_data = getattr(self.model, "fit_to_data", None)
        if fit_to_data is not None:
            # Data-dependent initialisation (e.g. a whitening stem) from training images only.
            fit_to_data(to_model_input(data.train_images[:DATA_INIT_IMAGES]))
        if fresh:  # a resumed run restores its own weights instead
            for feature in self.features:
                feature.initialise(self.model)
        for feature in self.features:  # e.g. a teacher's outputs for the training images
            feature.prepare(data)
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
        # Each rank trains on 1/world of the images with 1/world of the batch, so the
        # global batch, the number of steps and the schedule match a single process.
        self.local_batch = max(1, config.batch_size // context.world_size)
        self.steps_per_epoch = steps_per_epoch(len(data.train_labels) // context.world_size, self.local_batch)
        self.lookahead = (
            Lookahead(self.model, every=config.lookahead_every, total_steps=self.steps_per_epoch * config.epochs)
            if config.lookahead_every > 0
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
        # Rank 0 alone warns; the other ranks' watch never speaks.
        self.chance = ChanceWatch(int(self.model_args["num_classes"]), config.lr, quiet=not context.is_main)
        self.epochs_done = 0
        self.step = 0
        self.history: list[dict] = []
        self.best_model = self._snapshot()

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.evaluated_model.state_dict().items()}

    def _set_lr(self) -> float:
        return set_learning_rate(
            self.optimizer,
            self.config,
            step=self.step,
            total_steps=self.steps_per_epoch * self.config.epochs,
            scale=self.plateau.scale,
            epochs_done=self.epochs_done,
        )

    def _diverged(self, which: str, loss: float, epoch: int) -> TrainingDiverged:
        return diverged(
            which, loss, epoch=epoch, epochs_done=self.epochs_done, lr=self.config.lr, checkpoint=self.paths.last_checkpoint
        )

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
                images, views = augment_batch_with_views(
                    to_model_input(data.train_images[batch]),
                    config.augment,
                    generator=self.augment_generator,
                    indices=batch,
                    epoch=self.epochs_done,
                )
                images = images.to(context.device, non_blocking=True)
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = data.train_labels[batch].to(context.device, non_blocking=True)
                if config.selective_keep < 1 and self.epochs_done >= config.selective_after:
                    images, labels, batch, views = self._hardest(images, labels, batch, views)
                lr = self._set_lr()
                with autocast(self.context.device, self.autocast_dtype):
                    logits = self.trained(images)
                    loss = self._loss(logits, labels, batch, views)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    # After backward, so under DDP the norm is that of the all-reduced gradient.
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip, foreach=True)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.step += 1
                if self.lookahead is not None:
                    self.lookahead.after_step(self.step)
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

    @torch.no_grad()
    def _hardest(
        self, images: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor, views: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Selective backprop: the ``selective_keep`` share of the batch with the highest
        loss, scored by a forward pass in eval mode (so BatchNorm's statistics are not
        updated twice). The backward pass, two thirds of a step, runs on that share only."""
        self.model.eval()
        with autocast(self.context.device, self.autocast_dtype):
            losses = F.cross_entropy(self.model(images).float(), labels, reduction="none")
        self.model.train()
        keep = max(2, round(len(labels) * self.config.selective_keep))  # BatchNorm needs two
        chosen = losses.topk(min(keep, len(labels))).indices.sort().values
        return images[chosen], labels[chosen], batch[chosen.cpu()], views[chosen.cpu()]

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """A feature's loss (e.g. distillation's), else cross-entropy with the labels."""
        for feature in self.features:
            loss = feature.loss(logits, labels, batch=batch, views=views)
            if loss is not None:
                return loss
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)

    def _validate_epoch(self, train_loss: float) -> tuple[dict, bool]:
        """The epoch's validation figures and whether it is the best so far."""
        # Every rank validates (and later saves) rank 0's BatchNorm statistics.
        self.context.broadcast_buffers(self.evaluated_model)
        if not len(self.data.val_labels):
            # No validation split (full): the fixed schedule decides; keep the last epoch.
            return {"val_loss": None, "val_accuracy": None}, self.stopper.update(self.epochs_done, -float(self.epochs_done))
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
        self.chance.update(self.epochs_done, val_accuracy, train_loss)
        return {"val_loss": round(val_loss, 6), "val_accuracy": round(val_accuracy, 6)}, improved

    def fit(self, on_epoch: OnEpoch | None = None) -> None:
        """Run epochs until the maximum, early stopping or a callback's StopTraining,
        checkpointing after each; ``on_epoch`` is called (rank 0) after each checkpoint."""
        stop_requested = False
        while self.epochs_done < self.config.epochs and not self.stopper.should_stop and not stop_requested:
            started = time.perf_counter()
            train_loss, train_accuracy, lr = self.train_one_epoch()
            train_seconds = time.perf_counter() - started
            self.epochs_done += 1
            record = {"epoch": self.epochs_done, "train_loss": round(train_loss, 6), "train_accuracy": round(train_accuracy, 6)}
            validation, improved = self._validate_epoch(train_loss)
            if improved:
                self.best_model = self._snapshot()
            record.update(
                validation,
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

    def finish(self) -> nn.Module:
        """Load the best weights and (rank 0) write the final, self-describing model file."""
        best = create_model(self.config.model, **self.model_args)
        best.load_state_dict(self.best_model)
        best.eval()
        if self.context.is_main:
            card = ModelCard(
                model=self.config.model,
                model_args=dict(self.model_args),
                class_names=list(self.data.class_names),
                tta_flip=self.config.tta_flip,
                tta_shift=self.config.tta_shift,
                extra={
                    "run": self.paths.root.name,
                    "recipe": self.config.recipe,
                    "best_epoch": self.stopper.best_epoch,
                    "epochs": self.epochs_done,
                    "seed": self.config.seed,
                    "full": self.config.full,
                },
            )
            for feature in self.features:  # e.g. a specialist's group and base run
                card = feature.card(
                    card, model=best, val_images=self.data.val_images, val_labels=self.data.val_labels,
                    folder=self.paths.model.parent,
                )
            # The one final model. The best weights during training live in the training
            # checkpoint (checkpoints/last.safetensors, for resuming); no second model file.
            save_model(self.paths.model, best, card)
        self.context.barrier()
        return best


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
    on_epoch: OnEpoch | None,
) -> TrainResult:
    threads = _set_threads(config)
    context = distributed.setup(config.device)
    try:
        training_data = prepare_data(config, data, progress=progress and context.is_main)
        trainer = Trainer(config, paths, training_data, context, progress=progress, fresh=state is None)
        if state is None:
            if context.is_main:
                recorded = {key: value for feature in trainer.features for key, value in feature.provenance().items()}
                start_run_folder(paths, config, training_data, context, threads, trainer.autocast_dtype, recorded)
        else:
            check_resumed_classes(paths.root, training_data)
            if trainer.features and paths.provenance.is_file():
                document = Run(paths.root).provenance().document
                for feature in trainer.features:
                    feature.check_resumed(document)
            trainer.restore(state)
            if context.is_main:
                log.info("resuming %s after epoch %d", paths.root, trainer.epochs_done)
        try:
            trainer.fit(on_epoch)
        except TrainingDiverged:
            if context.is_main and trainer.epochs_done == 0 and state is None:
                forget_unstarted_run(paths)
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


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_epoch: OnEpoch | None = None,
) -> TrainResult:
    """Train a new run into ``run_dir``: a new or empty folder, or an interrupted run of
    this same config, which is continued as ``resume`` would. A folder holding other
    files, a finished run or a run of another config is refused. ``on_epoch`` is called
    with an ``EpochEnd`` after each epoch's checkpoint; raising ``StopTraining`` in it
    ends the run there. Training only: ``fmnist.pipeline.run_pipeline`` also calibrates,
    evaluates and writes the report, as ``fmnist train`` does."""
    check_config(config)
    paths = RunPaths(Path(run_dir))
    check_out_folder(config, paths)
    for feature in features_for(config):  # e.g. the specialist's base run, the start weights
        feature.preflight()
    with run_lock(paths):
        # Checked again under the lock: another process may have started a run here since.
        if check_out_folder(config, paths):
            log.info("continuing the interrupted run in %s (same config)", paths.root)
            return _resume_locked(paths, data, progress=progress, on_epoch=on_epoch)
        remove_stale_files(paths)
        return _run(config, paths, None, data, progress=progress, on_epoch=on_epoch)


def resume(
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_epoch: OnEpoch | None = None,
) -> TrainResult:
    """Continue an interrupted run from its last checkpoint; ends with the same weights as
    an uninterrupted run with the same config. The run's config.json and checkpoint are
    validated first; stale temporary files of writes the interruption cut short are removed."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise RunError(f"{paths.root}: not a run folder (no config.json)", "pass the folder that `fmnist train` created")
    with run_lock(paths):
        return _resume_locked(paths, data, progress=progress, on_epoch=on_epoch)


def _resume_locked(
    paths: RunPaths, data: str | os.PathLike[str] | None, *, progress: bool, on_epoch: OnEpoch | None
) -> TrainResult:
    config = read_run_config(paths)
    remove_stale_files(paths)
    state = load_training_state(paths.last_checkpoint) if paths.last_checkpoint.exists() else None
    return _run(config, paths, state, data, progress=progress, on_epoch=on_epoch)

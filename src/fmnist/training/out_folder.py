"""The folder a run trains into: what may be trained into, its lock, its first files and
its clean-up.

A new or empty folder starts a run; an interrupted run of the same config is continued;
anything else (a file, other files, a finished run, another config's run) is refused
before a byte is written. Only the process that writes the run folder (rank 0 under
torchrun) takes the lock and cleans up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING

import torch

from fmnist.errors import RunError
from fmnist.files import remove_stale_temporaries
from fmnist.run import Run
from fmnist.training.config import TrainConfig, dump_config
from fmnist.training.run_folder import RunPaths, locked, provenance

if TYPE_CHECKING:
    from fmnist.cpus import ThreadChoice
    from fmnist.training.distributed import Distributed
    from fmnist.training.training_data import TrainingData

log = logging.getLogger(__name__)


def check_out_folder(config: TrainConfig, paths: RunPaths) -> bool:
    """Refuse a run folder that training would damage; True when it holds an interrupted
    run of ``config`` (to continue), False when it is new or empty."""
    root = paths.root
    if root.exists() and not root.is_dir():
        raise RunError(f"run_dir {root} is a file, not a folder", "choose a new folder for the run")
    if not paths.config.exists():
        if not paths.is_empty():
            raise RunError(
                f"run_dir {root} is not empty and holds no run: training would overwrite its files",
                "choose a new or empty folder",
            )
        return False
    try:
        saved = Run.create(root).config_values()
    except RunError:  # unreadable: refused below as a run of another config
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
            f"continue it with fmnist train --resume {root}, or choose a new run folder",
        )
    if paths.model.exists():
        raise RunError(
            f"{root} already holds a run of this config, finished",
            f"evaluate it with fmnist evaluate {root}, or choose a new run folder",
        )
    return True


def writes_run_folder() -> bool:
    """Rank 0 under torchrun, or a single process (known before the process group is joined)."""
    return os.environ.get("RANK", "0") == "0"


def run_lock(paths: RunPaths) -> contextlib.AbstractContextManager:
    """The run folder's lock for the process that writes it; nothing for the other ranks."""
    return locked(paths) if writes_run_folder() else contextlib.nullcontext()


def remove_stale_files(paths: RunPaths) -> None:
    """Remove the temporary files of writes an interruption cut short. Safe under the
    lock: no other process writes into this folder."""
    if writes_run_folder():
        removed = remove_stale_temporaries(paths.writable_folders())
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", len(removed))


def forget_unstarted_run(paths: RunPaths) -> None:
    """Remove what a run that diverged in its first epoch wrote (config, provenance): no
    epoch to resume from, and the same run folder must take the retry with a lower rate."""
    for path in (paths.config, paths.provenance, paths.epochs_log):
        path.unlink(missing_ok=True)
    try:
        paths.root.rmdir()  # only when empty: never what was there before
    except OSError:
        pass


def start_run_folder(
    paths: RunPaths,
    config: TrainConfig,
    data: TrainingData,
    context: Distributed,
    threads: ThreadChoice,
    autocast: torch.dtype | None,
    features: dict | None = None,
) -> None:
    """Rank 0 of a fresh run: create the folder with its config.json and run.json
    (provenance: versions, machine, threads, processes, device, the training data)."""
    log.info(
        "training %s (recipe %s, seed %d) on %d images, validating on %d; %d process(es); run folder %s",
        config.model, config.recipe, config.seed, len(data.train_labels), len(data.val_labels),
        context.world_size, paths.root,
    )
    run = Run.create(paths.root)
    run.write_config(config)
    run_info = {
        **provenance(threads.threads),
        "torch_threads_from": threads.source,
        "processes": context.world_size,
        "device": str(context.device),
        "autocast": str(autocast or "off"),
    }
    run.write_provenance({**run_info, **(features or {}), "data": data.description})

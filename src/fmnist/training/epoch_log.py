"""The per-epoch record as a log line and as the run's epochs.jsonl."""

from __future__ import annotations

from fmnist.run import Run
from fmnist.training.run_folder import RunPaths


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
    Run.create(paths.root).write_history(history)

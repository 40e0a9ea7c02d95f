"""Many runs at a glance (`fmnist runs`): one row per run folder found under a folder.

A run is any folder ``fmnist.run.Run`` accepts (config.json or model.safetensors). The
search looks at the folder itself, its sub-folders and theirs (``runs/sweep/trial-3``)
and never inside a run. Other folders are skipped; ``include_others`` lists the ones
directly under the folder that hold no run as "not a run", so a typo in a path shows.

Every figure comes from the run's own files, read through ``Run``; a damaged or missing
file leaves its cells empty (None) instead of hiding the run:

    run            folder, relative to the searched one
    status         finished, interrupted (resume it: fmnist train --resume RUN),
                   failed (cannot be resumed) or running (a process trains into it now)
    recipe, model, seed      from config.json
    data_digest    the training data's content digest (run.json)
    epochs         epochs trained (epochs.jsonl)
    train_seconds  wall time of those epochs, validation included (sum over epochs.jsonl)
    val_accuracy   validation accuracy of the kept epoch (None for --full: no validation)
    test_accuracy  metrics.json (None until evaluated)
    test_ece       expected calibration error on the test set with the run's fitted
                   temperature (metrics.json; the uncalibrated ECE when never calibrated)
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError, RunError
from fmnist.run import CHECKPOINT_DIR, FIGURES_DIR, Run

SEARCH_DEPTH = 2  # the folder's sub-folders and theirs
SKIPPED_FOLDERS = {"mlruns", "tensorboard", CHECKPOINT_DIR, FIGURES_DIR, "__pycache__"}
NOT_A_RUN = "not a run"


@dataclass(frozen=True)
class Column:
    key: str  # the JSON/CSV name
    header: str  # the text table's heading; --sort takes either
    descending: bool = False  # --sort order: best first for accuracies
    width: int = 0  # text width; 0: as wide as the widest cell


COLUMNS = (
    Column("run", "run"),
    Column("status", "status"),
    Column("recipe", "recipe"),
    Column("model", "model"),
    Column("seed", "seed"),
    Column("data_digest", "data"),
    Column("epochs", "epochs"),
    Column("train_seconds", "time"),
    Column("val_accuracy", "val_acc", descending=True),
    Column("test_accuracy", "test_acc", descending=True),
    Column("test_ece", "ece"),
)
SHORT_DIGEST = 12  # hex digits shown in the text table (the JSON and CSV keep the whole digest)


def find_run_folders(folder: Path, *, include_others: bool = False) -> tuple[list[Path], list[Path]]:
    """(run folders, folders directly under ``folder`` that hold no run), each sorted."""
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise RunError(f"{folder}: {what}", "pass the folder holding your runs (default runs/, else .)")
    from fmnist.export_bundle import (
        is_bundle,  # the bundle's file list lives with its writer
    )

    if Run.is_run(folder) and not is_bundle(folder):
        return [folder], []
    runs: list[Path] = []
    others: list[Path] = []

    def walk(current: Path, depth: int) -> bool:
        found = False
        try:
            entries = sorted(current.iterdir())
        except OSError:
            return False  # an unreadable folder holds no run we could list
        for entry in entries:
            if entry.name.startswith(".") or entry.name in SKIPPED_FOLDERS or not entry.is_dir():
                continue
            bundle = is_bundle(entry)
            if Run.is_run(entry) and not bundle:
                runs.append(entry)
                found = True
            elif bundle:
                # An exported bundle has a run's file names but no training history to list.
                if depth == 1 and include_others:
                    others.append(entry)
            elif depth < SEARCH_DEPTH:
                below = walk(entry, depth + 1)
                found = found or below
                if not below and depth == 1 and include_others:
                    others.append(entry)
        return found

    walk(folder, 1)
    return runs, others


def run_row(run: Run, *, base: Path) -> dict[str, Any]:
    """One run's row (see the module docstring); never raises for a damaged file."""
    row: dict[str, Any] = {column.key: None for column in COLUMNS}
    row["run"] = _relative(run.root, base)
    row["status"] = str(run.status)
    try:
        config = run.config_values()
        row.update(recipe=config.get("recipe"), model=config.get("model"), seed=config.get("seed"))
    except RunError:
        pass
    try:
        row["data_digest"] = run.provenance().data_digest
    except RunError:
        pass
    try:
        history = run.history()
    except RunError:
        history = []
    if history:
        row["epochs"] = len(history)
        row["train_seconds"] = round(sum(record.seconds for record in history), 1)
        kept = [record for record in history if record.best]
        row["val_accuracy"] = kept[-1].val_accuracy if kept else None
    if run.evaluated:
        try:
            metrics = run.metrics()
        except RunError:
            metrics = None
        if metrics is not None:
            row["test_accuracy"] = metrics.test_accuracy
            calibration = metrics.document.get("calibration")
            if isinstance(calibration, dict) and isinstance(calibration.get("ece_after"), (int, float)):
                row["test_ece"] = float(calibration["ece_after"])
    return row


def _relative(path: Path, base: Path) -> str:
    try:
        relative = path.resolve().relative_to(base.resolve())
    except ValueError:
        return str(path)
    return str(relative) if str(relative) != "." else path.resolve().name


def list_runs(folder: str | os.PathLike[str], *, include_others: bool = False, sort: str | None = None) -> list[dict]:
    """Rows for every run under ``folder`` (see ``find_run_folders``), sorted by ``sort``
    (a column key or header) or by folder name."""
    base = Path(folder).expanduser()
    runs, others = find_run_folders(base, include_others=include_others)
    rows = [run_row(Run(path), base=base) for path in runs]
    rows += [{**{column.key: None for column in COLUMNS}, "run": _relative(path, base), "status": NOT_A_RUN} for path in others]
    return sort_rows(rows, sort)


def column_named(name: str) -> Column:
    wanted = name.strip().lower().replace("-", "_")
    for column in COLUMNS:
        if wanted in (column.key, column.header):
            return column
    valid = ", ".join(column.header if column.header == column.key else f"{column.header} ({column.key})" for column in COLUMNS)
    raise ConfigError(f"--sort {name}: no such column", f"choose from {valid}")


def sort_rows(rows: list[dict], sort: str | None) -> list[dict]:
    """Rows sorted by a column (accuracies best first), empty cells last; by run otherwise."""
    rows = sorted(rows, key=lambda row: row["run"])
    if sort is None:
        return rows
    column = column_named(sort)
    present = [row for row in rows if row[column.key] is not None]
    missing = [row for row in rows if row[column.key] is None]
    present.sort(key=lambda row: row[column.key], reverse=column.descending)
    return present + missing


# -- output ------------------------------------------------------------------------------------
def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("val_accuracy", "test_accuracy", "test_ece"):
        return f"{value:.2%}"
    if key == "data_digest":
        return str(value)[:SHORT_DIGEST]
    if key == "train_seconds":
        return f"{value:.0f}s" if value < 120 else f"{value / 60:.1f}min"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """Aligned text columns, numbers right-aligned; "no runs" when there are none."""
    if not rows:
        return "no runs"
    numeric = {"seed", "epochs", "train_seconds", "val_accuracy", "test_accuracy", "test_ece"}
    cells = [[_cell(column.key, row[column.key]) for column in COLUMNS] for row in rows]
    widths = [max(len(column.header), *(len(line[i]) for line in cells)) for i, column in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:
        parts = [
            value.rjust(width) if column.key in numeric else value.ljust(width)
            for value, width, column in zip(values, widths, COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line([column.header for column in COLUMNS]), *(line(values) for values in cells)])


def format_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[column.key for column in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue().rstrip("\n")


def format_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)

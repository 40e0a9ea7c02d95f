"""The best trial written out as a `fmnist train --config` file, and the results table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from fmnist.files import atomic_write_text
from fmnist.tuning.space import SearchSpace


def write_best_config(
    path: Path,
    space: SearchSpace,
    best,  # TrialRow
    *,
    study_name: str,
    trials: Sequence,
    trial_seconds: float | None,
) -> Path:
    """Write ``best``'s settings (the space's recipe, its base section and the trial's
    values) as YAML, with a comment saying where they come from; returns ``path``."""
    settings = space.settings(best.params)
    finished = sum(1 for row in trials if row.state in ("complete", "pruned"))
    lines = [
        f"# The best trial of study {study_name!r}: trial {best.number} of the {finished} finished,",
        f"# validation accuracy {best.value:.4f} after {best.epochs} of {best.epochs_configured} epochs.",
    ]
    if trial_seconds is not None:
        lines.append(
            f"# Found under a {trial_seconds:g} s budget per trial: a full run trains every epoch, so it may "
            "end elsewhere."
        )
    lines += [
        f"# Its run folder: {Path(best.run).name if best.run else '-'} in the study folder"
        + (f" on {best.host}" if best.host else ""),
        "# Train it: fmnist train --config best.yaml",
    ]
    text = "\n".join(lines) + "\n" + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return path


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence, parameters: Sequence[str], best_number: int | None) -> str:
    """The study's trials, one line each: number, state, validation accuracy, seconds,
    epochs counted (within the budget) of those configured, each searched setting; ``*``
    marks the best."""
    hosts = {row.host for row in rows if row.host}
    header = ["trial", "state", "val_acc", "seconds", "counted", *parameters]
    if len(hosts) > 1:
        header.append("host")
    table = [header]
    for row in rows:
        mark = "*" if row.number == best_number else ""
        note = " (baseline)" if row.baseline else (f" (retry of {row.retry_of})" if row.retry_of is not None else "")
        epochs = f"{row.epochs}/{row.epochs_configured}" if row.epochs is not None else "-"
        cells = [
            f"{row.number}{mark}",
            row.state + note,
            f"{row.value:.4f}" if row.value is not None else "-",
            f"{row.seconds:.1f}" if row.seconds is not None else "-",
            epochs,
            *(_cell(row.params.get(name)) for name in parameters),
        ]
        if len(hosts) > 1:
            cells.append(row.host or "-")
        table.append(cells)
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table)

"""`fmnist tune`: a hyperparameter search on Optuna, scored on the validation split."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fmnist.cli.common import (
    non_negative_int,
    positive_float,
    positive_int,
    progress_enabled,
)


def cmd_tune(args: argparse.Namespace) -> int:
    from fmnist.extras import require
    from fmnist.tuning import format_table, read_search_space, tune

    require("tune", feature="fmnist tune")
    space = read_search_space(Path(args.space))
    out = Path(args.out) if args.out else Path("runs") / f"tune-{space.path.stem}"
    result = tune(
        space,
        out,
        storage=args.storage,
        study_name=args.study_name,
        trials=args.trials,
        timeout=args.timeout,
        trial_seconds=args.trial_seconds,
        pruner=args.pruner,
        seed=args.seed,
        baseline=args.baseline,
        heartbeat=args.heartbeat,
        data=args.data,
        progress=progress_enabled(args),
    )
    best_number = result.best.number if result.best is not None else None
    if args.format == "json":
        document = {
            "study_name": result.study_name,
            "storage": result.storage,
            "best_trial": best_number,
            "best_config": str(result.best_config) if result.best_config else None,
            "trials": [dataclasses.asdict(row) for row in result.rows],
        }
        print(json.dumps(document, indent=2))
        return 0
    counts = {}
    for row in result.rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in counts.items())
    print(f"study {result.study_name!r} in {result.storage}: {len(result.rows)} trials ({summary or 'none yet'})")
    if result.rows:
        print(format_table(result.rows, [parameter.name for parameter in space.parameters], best_number))
    if result.best is None:
        print("no trial has completed yet: no best config written")
        return 0
    print(
        f"best: trial {result.best.number}, validation accuracy {result.best.value:.4f}; "
        f"its settings: {result.best_config} (fmnist train --config {result.best_config})"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune",
        help="search training settings with Optuna on the validation split; every trial a run folder",
        description=(
            "Search the settings of a search-space file (YAML or TOML: recipe, base, space; see docs/tuning.md). "
            "Each trial trains an ordinary run folder in --out and is scored by its best validation accuracy; "
            "the test split is never read. Workers on several machines share a study through --storage."
        ),
    )
    tune.add_argument("space", metavar="SPACE_FILE", help="the search space: recipe, base settings, ranges and choices")
    tune.add_argument("--out", metavar="DIR", help="study folder: trial-NNNN run folders, best.yaml, study.db (default: runs/tune-<space file name>)")
    tune.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of a shared study, e.g. postgresql://user@host/db (default: sqlite in --out)")
    tune.add_argument("--study-name", metavar="NAME", help="the study in the storage (default: the space file's name)")
    tune.add_argument("--trials", type=non_negative_int, default=10, metavar="N", help="trials this worker runs (default 10; 0: only show the study)")
    tune.add_argument("--timeout", type=positive_float, metavar="SECONDS", help="start no trial after this many seconds")
    tune.add_argument("--trial-seconds", type=positive_float, metavar="S", help="time budget per trial: only epochs that end within S seconds of training count")
    tune.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median", help="stop poor trials early from their per-epoch validation accuracy (default: median)")
    tune.add_argument("--baseline", action="store_true", help="a new study's first trial runs the base config's own values (a reference row)")
    tune.add_argument("--seed", type=int, help="seed of the sampler (one worker only: seeded workers would repeat each other)")
    tune.add_argument("--heartbeat", type=positive_int, default=60, metavar="SECONDS", help="a trial's worker records a heartbeat this often; one silent for twice as long is marked failed and run again (default 60)")
    tune.add_argument("--data", metavar="PATH", help="folder with the training data (default: search); only its training split is read")
    tune.add_argument("--format", choices=["text", "json"], default="text", help="the results table as text (default) or JSON")
    tune.add_argument("--quiet", action="store_true", help="no per-epoch or per-trial lines")
    tune.set_defaults(handler=cmd_tune)

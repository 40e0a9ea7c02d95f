"""`fmnist runs`: every run under a folder as a table, JSON or CSV."""

from __future__ import annotations

import argparse
from pathlib import Path


def default_folder() -> Path:
    """runs/ (where `fmnist train` puts runs) when it exists, else the working directory."""
    return Path("runs") if Path("runs").is_dir() else Path(".")


def cmd_runs(args: argparse.Namespace) -> int:
    from fmnist.tracking.listing import (
        column_named,
        format_csv,
        format_json,
        format_table,
        list_runs,
    )

    if args.sort is not None:
        column_named(args.sort)  # an unknown column is refused before any folder is read
    folder = Path(args.folder) if args.folder else default_folder()
    rows = list_runs(folder, include_others=args.all, sort=args.sort)
    formatter = {"text": format_table, "json": format_json, "csv": format_csv}[args.format]
    print(formatter(rows))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from fmnist.tracking.listing import COLUMNS

    runs = commands.add_parser(
        "runs",
        help="list the runs in a folder: recipe, model, seed, data, epochs, time, accuracies, ECE, status",
    )
    runs.add_argument("folder", metavar="DIR", nargs="?", help="where to look, two levels deep (default: runs/, else .)")
    runs.add_argument(
        "--sort",
        metavar="COLUMN",
        help=f"sort by a column: {', '.join(column.header for column in COLUMNS)} (accuracies best first)",
    )
    runs.add_argument("--format", choices=["text", "json", "csv"], default="text")
    runs.add_argument("--all", action="store_true", help="also list the folders under DIR that hold no run, as 'not a run'")
    runs.set_defaults(handler=cmd_runs)

"""`fmnist calibrate`, `fmnist analyze`, `fmnist compare`, `fmnist explain`: where a model errs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fmnist.cli.common import positive_int


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def calibrate_and_print(run_dir: Path, data: str | None) -> dict:
    """Fit and store a run's temperature; print one line. Used by `calibrate` and `train`."""
    from fmnist.evaluation import calibrate_run

    result = calibrate_run(run_dir, data)
    print(
        f"calibrated on {result.val_images:,} validation images: temperature {result.temperature:.3f}, "
        f"ECE {result.val_ece_before:.2%} -> {result.val_ece_after:.2%}, "
        f"NLL {result.val_nll_before:.4f} -> {result.val_nll_after:.4f}"
    )
    return result.to_dict()


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.format == "json":
        from fmnist.evaluation import calibrate_run

        _print_json(calibrate_run(Path(args.run), args.data, bins=args.bins).to_dict())
    else:
        calibrate_and_print(Path(args.run), args.data)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate", help="fit temperature scaling on a run's validation split and store it in its model file"
    )
    calibrate.add_argument("run", metavar="RUN_DIR")
    calibrate.add_argument("--data", metavar="PATH", help="the run's training data (default: where it was trained)")
    calibrate.add_argument("--bins", type=positive_int, default=15, help="equal-width confidence bins for the ECE (default 15)")
    calibrate.add_argument("--format", choices=["text", "json"], default="text")
    calibrate.set_defaults(handler=cmd_calibrate)

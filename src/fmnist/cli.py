"""The `fmnist` command line: parse, call the library, format, map errors to exit codes.

Every user-facing problem is an FmnistError: printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

from fmnist import __version__
from fmnist.errors import ConfigError, FmnistError

log = logging.getLogger("fmnist")
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"fmnist: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return value


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            return f"fmnist: warning: {message}" if record.levelno >= logging.WARNING else message

    handler.setFormatter(_Format())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


# -- data ----------------------------------------------------------------------------------
def cmd_data_info(args: argparse.Namespace) -> int:
    from fmnist.data.info import describe_data

    description = describe_data(args.data, progress=_progress_enabled(args))
    if args.format == "json":
        print(json.dumps(description, indent=2))
        return 0
    print(f"source   {description['root']}  ({description['origin_text']})")
    for split, info in description["splits"].items():
        if info is None:
            print(f"{split:<8} not present")
            continue
        status = "official Fashion-MNIST content" if info["official"] else "differs from the official release (custom or modified data)"
        print(f"{split:<8} {info['images']:,} images, {info['format'].upper()}: {', '.join(Path(p).name for p in info['files'])}")
        print(f"{'':<8} checksum: {status} (content digest {info['content_digest'][:16]}...)")
        balance = ", ".join(f"{name} {count:,}" for name, count in info["class_counts"].items())
        print(f"{'':<8} classes: {balance}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from fmnist.data.download import download_official
    from fmnist.data.locate import cache_data_dir, system_data_dirs

    folder = cache_data_dir()
    for line in download_official(folder, progress=_progress_enabled(args), local_copies=system_data_dirs()):
        print(line)
    print(f"verified copy in {folder}")
    return 0


def cmd_data_export_csv(args: argparse.Namespace) -> int:
    from fmnist.data import locate_data
    from fmnist.data.export_csv import export_csv

    for path in export_csv(locate_data(args.data, progress=_progress_enabled(args)), Path(args.folder)):
        print(f"wrote {path}")
    return 0


# -- models --------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from fmnist.models import count_flops, count_parameters, create_model, get_spec, list_models

    rows = []
    for name in list_models():
        model = create_model(name)
        rows.append({"name": name, "parameters": count_parameters(model), "flops": count_flops(model), "description": get_spec(name).description})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<16} {'parameters':>12} {'MFLOPs/image':>13}  description")
    for row in rows:
        print(f"{row['name']:<16} {row['parameters']:>12,} {row['flops'] / 1e6:>13.1f}  {row['description']}")
    return 0


# -- train / evaluate ----------------------------------------------------------------------
def _overrides(args: argparse.Namespace) -> dict:
    overrides = {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "subset": args.subset,
        "val_fraction": args.val_fraction,
        "patience": args.patience,
    }
    if args.no_augment:
        overrides["augment"] = {"enabled": False}
    return overrides


_CONFIG_FLAGS = ("recipe", "config", "model", "epochs", "batch_size", "lr", "seed", "subset", "val_fraction", "patience")


def _evaluate_and_report(run_dir: Path, data: str | None) -> dict:
    from fmnist.evaluation import evaluate_run
    from fmnist.reports import write_run_report

    predictions, metrics = evaluate_run(run_dir, data)
    report = write_run_report(run_dir, predictions, metrics)
    low, high = metrics["test_accuracy_ci95"]
    print(f"test accuracy {metrics['test_accuracy']:.2%} (95% CI {low:.2%}-{high:.2%}) on {metrics['test_images']:,} images")
    pairs = ", ".join(f"{m['true']}->{m['predicted']} {m['count']}" for m in metrics["most_confused"][:3])
    print(f"most confused: {pairs}")
    print(f"report: {report}")
    return metrics


def cmd_train(args: argparse.Namespace) -> int:
    from fmnist.training import default_run_dir, read_config_file, resolve_config, resume, train

    if args.resume:
        given = [f"--{name.replace('_', '-')}" for name in _CONFIG_FLAGS if getattr(args, name, None) not in (None, False)]
        if args.no_augment:
            given.append("--no-augment")
        if args.out:
            given.append("--out")
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be combined with --resume",
                "a resumed run keeps the settings it started with (its config.json)",
            )
        result = resume(Path(args.resume), data=args.data, progress=_progress_enabled(args))
    else:
        file_values = read_config_file(Path(args.config)) if args.config else None
        config = resolve_config(args.recipe, file_values=file_values, overrides=_overrides(args))
        run_dir = Path(args.out) if args.out else default_run_dir(config.model)
        result = train(config, run_dir, data=args.data, progress=_progress_enabled(args))
    stopped = "early stopping" if result.stopped_early else "the epoch limit"
    print(f"trained {len(result.history)} epochs (stopped by {stopped}); best epoch {result.best_epoch}: {result.run_dir / 'model.safetensors'}")
    if not args.no_eval:
        _evaluate_and_report(result.run_dir, args.data)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _evaluate_and_report(Path(args.run), args.data)
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser() -> Parser:
    parser = Parser(prog="fmnist", description="Train, understand and serve Fashion-MNIST classifiers.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    data = commands.add_parser("data", help="find, check, fetch and export the dataset")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    data_commands.required = True
    info = data_commands.add_parser("info", help="where the data comes from, counts, class balance, checksums")
    info.add_argument("--data", metavar="PATH", help="folder with IDX files or Kaggle CSVs (default: search)")
    info.add_argument("--format", choices=["text", "json"], default="text")
    info.set_defaults(handler=cmd_data_info)
    fetch = data_commands.add_parser("fetch", help="put a verified copy of the official files in the cache")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=cmd_data_fetch)
    export = data_commands.add_parser("export-csv", help="write Kaggle-layout CSVs into a folder")
    export.add_argument("folder", metavar="DIR")
    export.add_argument("--data", metavar="PATH")
    export.set_defaults(handler=cmd_data_export_csv)

    models = commands.add_parser("models", help="list the registered models with parameters and FLOPs")
    models.add_argument("--format", choices=["text", "json"], default="text")
    models.set_defaults(handler=cmd_models)

    train = commands.add_parser("train", help="train a model; writes a run folder with metrics and a report")
    train.add_argument("--recipe", help="named recipe (see the README); default: the default recipe")
    train.add_argument("--config", metavar="FILE", help="YAML or TOML settings; flags override it")
    train.add_argument("--data", metavar="PATH", help="folder with IDX files or Kaggle CSVs (default: search)")
    train.add_argument("--out", metavar="DIR", help="run folder (default: runs/<timestamp>-<model>)")
    train.add_argument("--model", help="registered model name (fmnist models lists them)")
    train.add_argument("--epochs", type=_positive_int, help="maximum epochs")
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--lr", type=_positive_float, help="peak learning rate")
    train.add_argument("--seed", type=int)
    train.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    train.add_argument("--subset", type=_positive_int, metavar="N", help="train on the first N training images")
    train.add_argument("--val-fraction", type=_fraction, help="validation share of the training split (default 0.1)")
    train.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    train.add_argument("--no-augment", action="store_true", help="train without augmentation")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    train.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation and report")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run on the test set; writes metrics.json and the report")
    evaluate.add_argument("run", metavar="RUN_DIR")
    evaluate.add_argument("--data", metavar="PATH", help="test data: a folder in either format, or a CSV file")
    evaluate.set_defaults(handler=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return args.handler(args)
    except FmnistError as error:
        print(f"fmnist: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130

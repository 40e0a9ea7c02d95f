"""`fmnist models`, `fmnist train`, `fmnist evaluate`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fmnist.cli.common import (
    fraction,
    positive_float,
    positive_int,
    probability,
    progress_enabled,
)
from fmnist.cli.flags import TRAIN_FLAGS, FlagWording, error_as_flags
from fmnist.errors import ConfigError, FmnistError


def cmd_models(args: argparse.Namespace) -> int:
    from fmnist.models import (
        count_flops,
        count_parameters,
        create_model,
        get_spec,
        list_models,
    )

    rows = []
    for name in list_models():
        model = create_model(name)
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(model),
                "flops": count_flops(model),
                "description": get_spec(name).description,
            }
        )
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<16} {'parameters':>12} {'MFLOPs/image':>13}  description")
    for row in rows:
        print(f"{row['name']:<16} {row['parameters']:>12,} {row['flops'] / 1e6:>13.1f}  {row['description']}")
    return 0


# Flags that set the config; a resumed run keeps its own, so they are refused with --resume.
CONFIG_FLAGS = ("recipe", "config", "set", "model", "epochs", "batch_size", "lr", "seed", "threads", "subset", "val_fraction", "patience", "no_augment", "full", "out")
TRANSFER_FLAGS = (
    "pretrained", "init", "image_size", "freeze_epochs", "backbone_lr_scale", "specialist", "base",
    "teacher", "distill_temperature", "distill_weight",
)


def config_overrides(args: argparse.Namespace) -> dict:
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
        "full": True if args.full else None,
        "pretrained": args.pretrained,
        "init_run": _absolute(args.init),
        "freeze_epochs": args.freeze_epochs,
        "backbone_lr_scale": args.backbone_lr_scale,
        "specialist": args.specialist,
        "base_run": _absolute(args.base),
        "teachers": tuple(_absolute(path) for path in args.teacher) if args.teacher else None,
        "distill_temperature": args.distill_temperature,
        "distill_weight": args.distill_weight,
    }
    if args.no_augment:
        # Without flipped training images the mirror pass of flip TTA only adds noise.
        overrides["augment"] = {"enabled": False}
        overrides["tta_flip"] = False
        overrides["tta_shift"] = False
    if args.full and args.patience is None:
        overrides["patience"] = 0  # nothing to stop on without a validation split
    return overrides


def _absolute(path: str | None) -> str | None:
    # Stored in config.json, so it must not depend on the working directory (the model card
    # stores names relative to the run instead: training/specialist.py).
    return str(Path(path).expanduser().resolve()) if path else None


def _absolute_run_folders(values: dict) -> dict:
    """``values`` (of --set or a config file) with their run folders made absolute, as
    --init, --base and --teacher are: config.json must not depend on the working directory
    (a resumed run would find other folders, or none)."""
    for key in ("init_run", "base_run"):
        if isinstance(values.get(key), str):
            values[key] = _absolute(values[key])
    if isinstance(values.get("teachers"), list):
        values["teachers"] = [_absolute(path) if isinstance(path, str) else path for path in values["teachers"]]
    return values


def config_from_args(args: argparse.Namespace):
    """The resolved TrainConfig of a new run: recipe, then --config, flags and --set."""
    from fmnist.training import read_config_file, resolve_config
    from fmnist.training.config import parse_setting

    if bool(args.specialist) != bool(args.base):
        raise ConfigError(
            "--specialist and --base go together",
            "a specialist refines a main run: pass --specialist GROUP --base RUN_DIR",
        )
    settings = _absolute_run_folders(dict(parse_setting(text) for text in args.set or []))
    if args.image_size is not None:
        settings["model_args.image_size"] = args.image_size
    file_values = _absolute_run_folders(read_config_file(Path(args.config))) if args.config else None
    return resolve_config(args.recipe, file_values=file_values, overrides=config_overrides(args), settings=settings)


def print_evaluation(metrics: dict, report: Path | None) -> None:
    low, high = metrics["test_accuracy_ci95"]
    print(
        f"test accuracy {metrics['test_accuracy']:.2%} (95% CI {low:.2%}-{high:.2%}) "
        f"on {metrics['test_images']:,} images"
    )
    pairs = ", ".join(f"{m['true']}->{m['predicted']} {m['count']}" for m in metrics["most_confused"][:3])
    print(f"most confused: {pairs}")
    effect = metrics.get("specialist")
    if effect is not None:
        without, with_ = effect["without_specialist"], effect["with_specialist"]
        print(
            f"with the specialist {with_['test_accuracy']:.2%}, base alone {without['test_accuracy']:.2%}: "
            f"fixed {effect['fixed']}, broke {effect['broken']} (exact McNemar p = {effect['mcnemar_p']:.3g})"
        )
    if report is not None:
        print(f"report: {report}")


def cmd_train(args: argparse.Namespace) -> int:
    """``fmnist train``: the library's errors and warnings name flags, not parameters."""
    wording = FlagWording()
    handlers = logging.getLogger("fmnist").handlers
    for handler in handlers:
        handler.addFilter(wording)
    try:
        return _train(args)
    except FmnistError as error:
        raise error_as_flags(error) from None
    finally:
        for handler in handlers:
            handler.removeFilter(wording)


def _train(args: argparse.Namespace) -> int:
    from fmnist.cli.analysis import print_calibration
    from fmnist.pipeline import resume_pipeline, run_pipeline
    from fmnist.tracking import open_trackers, parse_log_targets
    from fmnist.training import default_run_dir
    from fmnist.training.config import dump_config

    if args.resume:
        given = [
            f"--{name.replace('_', '-')}"
            for name in CONFIG_FLAGS + TRANSFER_FLAGS
            if getattr(args, name, None) not in (None, False)
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be combined with --resume",
                "a resumed run keeps the settings it started with (its config.json)",
            )
        run_dir = Path(args.resume)
        if args.print_config:
            from fmnist.training.resume import read_run_config
            from fmnist.training.run_folder import RunPaths

            print(dump_config(read_run_config(RunPaths(run_dir))), end="")
            return 0
    else:
        config = config_from_args(args)
        if args.print_config:
            print(dump_config(config), end="")  # JSON, which --config reads back
            return 0
        run_dir = Path(args.out) if args.out else default_run_dir(config.model)
    steps = {"data": args.data, "evaluate": not args.no_eval, "progress": progress_enabled(args)}
    # Opened before training, so a missing extra or an unusable store is refused first.
    with open_trackers(parse_log_targets(args.log), run_dir) as trackers:
        on_epoch = trackers or None
        if args.resume:
            result = resume_pipeline(run_dir, **steps, on_epoch=on_epoch)
        else:
            result = run_pipeline(config, run_dir, **steps, on_epoch=on_epoch)
        trained = result.training
        if not trained.is_main:
            return 0  # under torchrun, rank 0 alone reports and evaluates
        stopped = "early stopping" if trained.stopped_early else "the epoch limit"
        print(
            f"trained {len(trained.history)} epochs (stopped by {stopped}); best epoch {trained.best_epoch}: "
            f"{trained.run_dir / 'model.safetensors'}"
        )
        if result.calibration is not None:
            print_calibration(result.calibration)
        if result.metrics is not None:
            print_evaluation(result.metrics, result.report)
        calibration = result.calibration.to_dict() if result.calibration is not None else None
        trackers.finished(metrics=result.metrics, calibration=calibration)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fmnist.evaluation.evaluate import EXPORT_SUFFIXES, evaluate_export
    from fmnist.pipeline import evaluate_and_report

    if args.split != "test" or args.views is not None:
        return _evaluate_views(args)
    if Path(args.run).suffix.lower() in EXPORT_SUFFIXES:  # an exported file: its metrics, printed
        metrics, report = evaluate_export(args.run, args.data)[1], None
    else:
        metrics, report = evaluate_and_report(Path(args.run), args.data)
    if args.format == "json":
        print(json.dumps(metrics, indent=2))
    else:
        print_evaluation(metrics, report)
    return 0


def _evaluate_views(args: argparse.Namespace) -> int:
    """`fmnist evaluate --split val` / `--views`: one line per test-time view, nothing written."""
    from fmnist.evaluation.evaluate import EXPORT_SUFFIXES
    from fmnist.evaluation.views import evaluate_views, parse_views

    if Path(args.run).suffix.lower() in EXPORT_SUFFIXES:
        raise ConfigError(
            f"{args.run}: --split and --views need a run folder (an exported file has no validation split "
            "and its views are fixed in its graph)",
            "pass the run folder it was exported from",
        )
    views = parse_views(args.views) if args.views is not None else None
    results = evaluate_views(args.run, args.data, split=args.split, views=views)
    if views is None:  # --split val alone: the run's own view
        results = [result for result in results if result.own]
    if args.format == "json":
        print(json.dumps([result.to_dict() for result in results], indent=2))
        return 0
    name = "validation" if args.split == "val" else "test"
    for result in results:
        own = "  (the run's own)" if result.own else ""
        print(
            f"{result.view:<10} {name} accuracy {result.accuracy:.2%} ({result.errors:,} errors of {result.images:,}), "
            f"NLL {result.nll:.4f}, {result.seconds:.1f} s{own}"
        )
    return 0


def _refuse_ensemble_out(out: Path, members: list[str]) -> None:
    """The ensemble's folder gets a metrics.json and report.html: never a member's or any
    other run's folder (their metrics would be replaced), never a file."""
    from fmnist.files import same_file
    from fmnist.training.run_folder import RunPaths

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", "give a folder for the ensemble's metrics and report")
    for member in members:
        folder = Path(member) if Path(member).is_dir() else Path(member).parent
        if same_file(out, folder):
            raise ConfigError(f"--out {out} is the folder of the member {member}", "give a new folder for the ensemble")
    if out.is_dir() and RunPaths(out).is_run():
        raise ConfigError(f"--out {out} is a trained run's folder", "give a new folder for the ensemble")


def cmd_ensemble(args: argparse.Namespace) -> int:
    import datetime as dt

    from fmnist.evaluation import evaluate_ensemble
    from fmnist.reports import write_run_report
    from fmnist.run import Run

    tta = True if args.tta else (False if args.no_tta else None)
    out = Path(args.out) if args.out else Path("runs") / f"{dt.datetime.now():%Y%m%d-%H%M%S}-ensemble"
    _refuse_ensemble_out(out, args.runs)  # before the members are evaluated
    predictions, metrics = evaluate_ensemble(args.runs, args.data, tta_flip=tta)
    Run.create(out).write_metrics(metrics)
    report = write_run_report(out, predictions, metrics, title=f"fmnist ensemble of {len(args.runs)} runs")
    low, high = metrics["test_accuracy_ci95"]
    for member in metrics["members"]:
        print(f"member {member['model_file']}: test accuracy {member['test_accuracy']:.2%}")
    cost = metrics["cost"]
    seconds = cost["total_train_seconds"]
    print(
        f"ensemble of {cost['runs']}: test accuracy {metrics['test_accuracy']:.2%} (95% CI {low:.2%}-{high:.2%}); "
        f"total training time {'unknown' if seconds is None else f'{seconds / 60:.1f} min'}"
    )
    print(f"report: {report}")
    return 0


class _RecipeNames:
    """list_recipes(), read when argparse first needs it (help, or a --recipe to check):
    importing the recipes loads torch, which `fmnist --version` need not wait for."""

    def _names(self) -> list[str]:
        from fmnist.training.recipes import list_recipes

        return list_recipes()

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


# argparse dest -> the TrainConfig field whose recipe value is the flag's default.
_FIELD_OF_DEST = {dest: field for field, dest in ((f, f) for f in TRAIN_FLAGS) if dest not in ("run_dir", "data")}
_FIELD_OF_DEST.update(init="init_run", base="base_run", teacher="teachers")


class TrainHelpFormatter(argparse.HelpFormatter):
    """Help with each flag's default: the recipes' values for config flags (read when help
    is shown), else the flag's own default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.help is argparse.SUPPRESS or "(default" in text or isinstance(action, argparse._StoreTrueAction):
            return text
        field = _FIELD_OF_DEST.get(action.dest)
        if field is not None:
            return f"{text} (default: {_recipe_defaults(field)})".replace("%", "%%")
        if action.default not in (None, False, argparse.SUPPRESS):
            return f"{text} (default: %(default)s)"
        return text


def _recipe_defaults(field: str) -> str:
    from fmnist.training.recipes import DEFAULT_RECIPE, RECIPES

    if field == "recipe":
        return DEFAULT_RECIPE
    values = {name: getattr(config, field) for name, config in RECIPES.items()}
    if len(set(map(repr, values.values()))) == 1:
        return _shown(next(iter(values.values())))
    return "the recipe's: " + ", ".join(f"{name} {_shown(value)}" for name, value in values.items())


def _shown(value: object) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list the registered models with parameters and FLOPs")
    models.add_argument("--format", choices=["text", "json"], default="text")
    models.set_defaults(handler=cmd_models)

    train = commands.add_parser(
        "train",
        help="train a model; writes a run folder with metrics and a report",
        description="Train a model into a run folder, calibrate it, evaluate it on the test set and write its "
        "report. Settings come from the recipe, then --config, then the flags and --set.",
        formatter_class=TrainHelpFormatter,
    )
    train.add_argument(
        "--recipe", choices=_RecipeNames(), help="named recipe: seed (the original notebook), fast, best (most accurate)"
    )
    train.add_argument("--config", metavar="FILE", help="YAML, TOML or JSON settings (e.g. from --print-config); flags override it")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="set any config field, last of all; repeatable; dotted for nested fields (augment.flip=true, "
        "model_args.width_14=48); values are JSON (numbers, true/false, null, lists) or plain text; --print-config lists the keys",
    )
    train.add_argument("--print-config", action="store_true", help="print the resolved config as JSON (for --config) and exit without training")
    train.add_argument("--data", metavar="PATH", help="IDX/CSV folder, image folder (train/<class>/*.png, test/<class>/...) or a .csv/.npz file; a classes.txt next to it names the classes (default: search)")
    train.add_argument("--out", metavar="DIR", help="run folder (default: runs/<timestamp>-<model>)")
    train.add_argument("--model", help="registered model name (fmnist models lists them)")
    train.add_argument("--epochs", type=positive_int, help="maximum epochs")
    train.add_argument("--batch-size", type=positive_int, help="images per step")
    train.add_argument("--lr", type=positive_float, help="peak learning rate")
    train.add_argument("--seed", type=int, help="seed of the split, initialisation and batch order")
    train.add_argument("--threads", type=positive_int, help="CPU threads (default: $OMP_NUM_THREADS, else the CPUs this process may use: taskset, cgroup quota)")
    train.add_argument("--subset", type=positive_int, metavar="N", help="train on the first N training images")
    train.add_argument("--val-fraction", type=fraction, help="validation share of the training split")
    train.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    train.add_argument("--no-augment", action="store_true", help="train without augmentation")
    train.add_argument(
        "--full",
        action="store_true",
        help="final retrain on train+validation with the recipe's fixed schedule (no validation, last epoch kept)",
    )
    transfer = train.add_argument_group("transfer learning and specialists")
    transfer.add_argument(
        "--pretrained",
        metavar="SOURCE",
        help="ImageNet weights for --model resnet18/mobilenet_v2: a .safetensors/.pth file, or 'imagenet' (downloads)",
    )
    transfer.add_argument("--init", metavar="RUN_DIR", help="start from one of your runs' weights (a different head is re-initialised)")
    transfer.add_argument("--image-size", type=positive_int, metavar="PX", help="upsample 28 px to PX for ImageNet backbones (default: 64)")
    transfer.add_argument("--freeze-epochs", type=int, metavar="N", help="warm-up epochs with the backbone frozen")
    transfer.add_argument("--backbone-lr-scale", type=positive_float, metavar="X", help="backbone lr = lr x X (e.g. 0.1)")
    transfer.add_argument("--specialist", metavar="GROUP", help="train only on a group of confusable classes: tops (default: none)")
    transfer.add_argument("--base", metavar="RUN_DIR", help="the main run a --specialist refines")
    distill = train.add_argument_group("knowledge distillation")
    distill.add_argument(
        "--teacher", action="append", metavar="RUN_DIR",
        help="train on this run's probabilities mixed with the labels; repeat for an ensemble of teachers "
        "(they must split the data as this run does: same seed or --set split_seed; default: none)",
    )
    distill.add_argument("--distill-temperature", type=positive_float, metavar="T", help="softmax temperature of the teachers and student")
    distill.add_argument("--distill-weight", type=probability, metavar="W", help="the teachers' share of the loss, 0-1")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    train.add_argument(
        "--log",
        action="append",
        metavar="TRACKER",
        help="also log to tensorboard (RUN/tensorboard) and/or mlflow ($MLFLOW_TRACKING_URI, else ./mlruns); repeat or comma-separate",
    )
    train.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation and report")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a run on the test set (writes metrics.json and the report), or an exported .onnx/.pt (prints them)"
    )
    evaluate.add_argument("run", metavar="RUN_DIR_OR_EXPORT")
    evaluate.add_argument(
        "--data", metavar="PATH",
        help="test data: an IDX/CSV folder, an image folder, or a .csv/.npz file (with --split val: the run's training data)",
    )
    evaluate.add_argument(
        "--split", choices=("test", "val"), default="test",
        help="val: the run's own validation split, rebuilt from its config, to choose on; prints, writes nothing",
    )
    evaluate.add_argument(
        "--views", metavar="LIST",
        help="compare test-time views side by side (accuracy, NLL, seconds): comma-separated none, flip, "
        "flip+shift, or all; prints, writes nothing",
    )
    evaluate.add_argument("--format", choices=("text", "json"), default="text", help="json: the metrics (or one object per view) on stdout")
    evaluate.set_defaults(handler=cmd_evaluate)

    ensemble = commands.add_parser("ensemble", help="average several runs' probabilities and evaluate them as one model")
    ensemble.add_argument("runs", metavar="RUN_DIR", nargs="+")
    ensemble.add_argument("--data", metavar="PATH", help="test data: an IDX/CSV folder, an image folder, or a .csv/.npz file")
    ensemble.add_argument("--out", metavar="DIR", help="where metrics.json and the report go (default: runs/<timestamp>-ensemble)")
    tta = ensemble.add_mutually_exclusive_group()
    tta.add_argument("--tta", action="store_true", help="flip test-time augmentation for every member (with shift views where a member has them)")
    tta.add_argument("--no-tta", action="store_true", help="no test-time augmentation for any member")
    ensemble.set_defaults(handler=cmd_ensemble)

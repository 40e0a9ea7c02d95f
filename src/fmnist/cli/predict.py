"""`fmnist predict`, `fmnist export` (`fmnist serve` lives in fmnist.cli.serve)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from itertools import islice
from pathlib import Path

from fmnist.cli.common import EXIT_USAGE, positive_int, probability
from fmnist.errors import FmnistError

BACKEND_CHOICES = ("torch", "onnxruntime")


def _batches(items, size: int):
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _rows(args: argparse.Namespace, predictor) -> tuple[list[dict], int]:
    """Prediction rows in input order, and the number of inputs that failed."""
    import numpy as np

    from fmnist.inference.inputs import expand_inputs
    from fmnist.inference.predictor import top_k

    rows, failed = [], 0
    for batch in _batches(expand_inputs(args.inputs, raw=args.raw), args.batch_size):
        good = [item for item in batch if item.error is None]
        for item in batch:
            if item.error is not None:
                failed += 1
                print(f"fmnist: error: {item.error}", file=sys.stderr)
        if not good:
            continue
        probabilities = predictor.probabilities(np.stack([item.image for item in good]))
        predictions = top_k(probabilities, predictor.class_names, k=args.top_k, min_confidence=args.min_confidence)
        for item, prediction in zip(good, predictions):
            for warning in item.warnings:
                print(f"fmnist: warning: {item.path}: {warning}", file=sys.stderr)
            row = {"path": item.path, **prediction.to_dict()}
            if item.label is not None and item.label < len(predictor.class_names):
                row["true_label"] = predictor.class_names[item.label]
            elif item.label is not None:
                print(f"fmnist: warning: {item.path}: label {item.label} is not one of the model's {len(predictor.class_names)} classes", file=sys.stderr)
            if item.warnings:
                row["warnings"] = item.warnings
            rows.append(row)
    return rows, failed


def _format(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label", "class_id", "probability", "top_k"])
        for row in rows:
            ranked = ";".join(f"{entry['label']}:{entry['probability']:.4f}" for entry in row["top_k"])
            writer.writerow([row["path"], row["label"], row["class_id"], f"{row['probability']:.6f}", ranked])
        return buffer.getvalue()
    width = max([len("input")] + [len(row["path"]) for row in rows])
    lines = [f"{'input':<{width}}  {'prediction':<12} {'prob':>6}  top-k"]
    for row in rows:
        ranked = ", ".join(f"{entry['label']} {entry['probability']:.2f}" for entry in row["top_k"])
        lines.append(f"{row['path']:<{width}}  {row['label']:<12} {row['probability']:>6.3f}  {ranked}")
    return "\n".join(lines) + "\n"


def _refuse_overwriting_inputs(args: argparse.Namespace) -> None:
    """--out must be neither an input (an image or CSV given, or found in a folder given)
    nor the model or another file of its run."""
    from fmnist.files import refuse_overwriting, writable_target
    from fmnist.inference.inputs import CSV_SUFFIXES, IMAGE_SUFFIXES
    from fmnist.run import files_of_run_around

    out = Path(args.out).expanduser()
    writable_target(out)  # a folder, FIFO or device is refused before any prediction
    if not os.path.lexists(out):
        return  # a new file cannot be an input
    protected = files_of_run_around(args.model)
    for argument in args.inputs:
        path = Path(argument).expanduser()
        if path.is_dir():
            protected += [
                child for child in path.rglob("*")
                if child.suffix.lower() in IMAGE_SUFFIXES or child.name.lower().endswith(CSV_SUFFIXES)
            ]
        else:
            protected.append(path)
    refuse_overwriting(out, protected)


def cmd_predict(args: argparse.Namespace) -> int:
    from fmnist import extras

    if args.backend == "onnxruntime":  # before the slow imports: a core install is told at once
        extras.require("export", "onnxruntime", feature="fmnist predict --backend onnxruntime")
    from fmnist.files import atomic_write_text
    from fmnist.inference.predictor import load_predictor

    if args.out:
        _refuse_overwriting_inputs(args)
    predictor = load_predictor(args.model, backend=args.backend)
    rows, failed = _rows(args, predictor)
    if not rows and not failed:
        raise FmnistError("no images found in the inputs", "pass image files, folders with images, or a CSV")
    suffix = Path(args.out).suffix.lower() if args.out else ""
    fmt = args.format or {".json": "json", ".csv": "csv"}.get(suffix, "table")
    text = _format(rows, fmt)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {len(rows)} predictions to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if failed:
        print(f"fmnist: {failed} input(s) failed, {len(rows)} predicted", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fmnist import extras

    if args.format == "bundle":
        return _export_bundle(args)
    if args.format == "onnx":  # TorchScript needs only torch
        extras.require("export", feature="fmnist export --format onnx")
    from fmnist.export import export_model

    result = export_model(args.model, Path(args.out), fmt=args.format, int8=args.int8, data=args.data)
    for key, value in result.summary().items():
        print(f"{key:<20} {value}")
    return 0


def _export_bundle(args: argparse.Namespace) -> int:
    from fmnist.errors import ConfigError
    from fmnist.export_bundle import export_bundle

    if args.int8:
        raise ConfigError("--int8 works with --format onnx only", "drop --int8 for a bundle")
    result = export_bundle(args.model, Path(args.out), data=args.data)
    for key, value in result.summary().items():
        print(f"{key:<20} {value}")
    for note in result.notes:
        print(f"fmnist: note: {note}", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="classify your own images, folders or a CSV")
    predict.add_argument("model", metavar="RUN_DIR_OR_MODEL")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or Kaggle-layout CSVs")
    predict.add_argument("--backend", choices=BACKEND_CHOICES, default="torch")
    predict.add_argument("--top-k", type=positive_int, default=3)
    predict.add_argument("--format", choices=["table", "json", "csv"], default=None, help="default: table (json or csv for --out *.json or *.csv)")
    predict.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    predict.add_argument("--min-confidence", type=probability, default=0.0, help="answer 'uncertain' below this probability")
    predict.add_argument("--raw", action="store_true", help="inputs are already 28x28 dataset-style images: no conversion")
    predict.add_argument("--batch-size", type=positive_int, default=256)
    predict.set_defaults(handler=cmd_predict)

    export = commands.add_parser("export", help="export a model to ONNX or TorchScript, or a run as a shareable bundle")
    export.add_argument("model", metavar="RUN_DIR")
    export.add_argument(
        "--format", choices=["onnx", "torchscript", "bundle"], required=True,
        help="bundle: a folder with model.safetensors, model.onnx, config.json and a README.md model card",
    )
    export.add_argument("--int8", action="store_true", help="also quantize to int8 (ONNX only); prints accuracy drop and speed-up")
    export.add_argument("--out", required=True, metavar="FILE", help="the file to write (a new folder for --format bundle)")
    export.add_argument("--data", metavar="PATH", help="dataset for the int8 calibration and accuracy check (default: search)")
    export.set_defaults(handler=cmd_export)

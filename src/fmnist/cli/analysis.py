"""`fmnist calibrate`, `fmnist analyze`, `fmnist compare`, `fmnist explain`: where a model errs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.cli.common import EXIT_USAGE, non_negative_int, positive_int, whole_number

if TYPE_CHECKING:
    from fmnist.evaluation import CalibrationResult

MAX_EXPLAIN_IMAGES = 256  # occlusion costs ~144 forward passes per image
MAX_ECE_BINS = 1000  # the reliability diagram keeps per-bin lists; more bins than this say nothing


def ece_bins(text: str) -> int:
    return whole_number(text, 1, MAX_ECE_BINS, what="bin count")


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def print_calibration(result: CalibrationResult) -> None:
    """One line on a fitted temperature. Used by `calibrate` and `train`."""
    print(
        f"calibrated on {result.val_images:,} validation images: temperature {result.temperature:.3f}, "
        f"ECE {result.val_ece_before:.2%} -> {result.val_ece_after:.2%}, "
        f"NLL {result.val_nll_before:.4f} -> {result.val_nll_after:.4f}"
    )


def calibrate_and_print(run_dir: Path, data: str | None, *, bins: int) -> dict:
    """Fit and store a run's temperature; print one line."""
    from fmnist.evaluation import calibrate_run

    result = calibrate_run(run_dir, data, bins=bins)
    print_calibration(result)
    return result.to_dict()


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.format == "json":
        from fmnist.evaluation import calibrate_run

        _print_json(calibrate_run(Path(args.run), args.data, bins=args.bins).to_dict())
    else:
        calibrate_and_print(Path(args.run), args.data, bins=args.bins)
    return 0


def _analysis_text(document: dict) -> str:
    lines = [
        f"accuracy {document['accuracy']:.2%} on {document['test_images']:,} test images ({document['errors']:,} errors)",
        "",
        "most confused (true -> predicted: count):",
    ]
    lines += [f"  {m['true']} -> {m['predicted']}: {m['count']}" for m in document["most_confused"]] or ["  none"]
    lines += ["", "per-class accuracy (95% bootstrap CI):"]
    for row in document["per_class_accuracy"]:
        low, high = row["ci95"]
        lines.append(f"  {row['name']:<12} {row['accuracy']:7.2%}  [{low:.2%}, {high:.2%}]  n={row['support']}")
    tops = document["tops_confusion"]
    if tops["classes"]:  # Fashion-MNIST only
        lines += ["", "tops confusion (rows: true class, columns: predicted):", "  " + " " * 12 + "".join(f"{n[:11]:>12}" for n in tops["classes"])]
        lines += [f"  {name:<12}" + "".join(f"{count:>12}" for count in row) for name, row in zip(tops["classes"], tops["matrix"])]
    lines += ["", "top losses (test index: true -> predicted, confidence):"]
    lines += [f"  #{t['index']}: {t['true']} -> {t['predicted']} {t['confidence']:.3f}" for t in document["top_losses"]]
    neighbours = document.get("nearest_training_images", {})
    if neighbours:
        lines += ["", "nearest training images of the most confidently wrong (train index label similarity):"]
        for index, rows in neighbours.items():
            lines.append(f"  test #{index}: " + ", ".join(f"#{n['train_index']} {n['label']} {n['similarity']:.2f}" for n in rows))
    if "label_issues" in document:  # absent with --label-issues 0
        lines += ["", f"likely label errors (cleanlab confident learning): {document['label_issues_found']} found; most suspicious:"]
        lines += [
            f"  #{i['index']}: labelled {i['given']}, model says {i['predicted']} {i['confidence']:.3f}"
            for i in document["label_issues"]
        ]
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    from fmnist import extras

    if args.label_issues:  # refused before the model runs, not after
        extras.require(
            "analysis", feature="the likely-label-error search of fmnist analyze", instead="pass --label-issues 0 to skip them"
        )
    from fmnist.evaluation.interpretation import Interpretation

    interpretation = Interpretation.from_run(Path(args.run), args.data)
    document = interpretation.to_dict(
        min_count=args.min_count,
        top_losses=args.top_losses,
        label_issues=args.label_issues,
        neighbours=args.neighbours,
        neighbour_errors=args.neighbour_errors,
    )
    if args.format == "json":
        _print_json(document)
    else:
        print(_analysis_text(document))
    return 0


def _comparison_text(document: dict) -> str:
    mcnemar = document["mcnemar"]
    lines = [
        f"A: {document['a']}  accuracy {document['accuracy_a']:.2%}",
        f"B: {document['b']}  accuracy {document['accuracy_b']:.2%}",
        (f"B - A: {document['accuracy_delta']:+.2%} on {document['test_images']:,} test images; "
        f"only A right {mcnemar['only_a_correct']}, only B right {mcnemar['only_b_correct']}, "
        f"exact McNemar p = {mcnemar['p_value']:.3g}"),
        "",
        "per-class accuracy (A -> B, delta):",
    ]
    lines += [
        f"  {row['class']:<12} {row['accuracy_a']:7.2%} -> {row['accuracy_b']:7.2%}  {row['delta']:+.2%}"
        for row in document["per_class"]
    ]
    lines += ["", "confusable pairs (errors in both directions):"]
    lines += [
        f"  {p['classes'][0]} <-> {p['classes'][1]}: A {p['errors_a']}, B {p['errors_b']} "
        f"(B fixed {p['fixed']}, broke {p['broken']})"
        for p in document["pairs"]
    ]
    names = document["confusion_difference"]["class_names"]
    matrix = document["confusion_difference"]["matrix"]
    cells = sorted(
        ((matrix[t][p], names[t], names[p]) for t in range(len(names)) for p in range(len(names)) if t != p and matrix[t][p]),
        key=lambda cell: -abs(cell[0]),
    )
    lines += ["", "largest changes in the confusion matrix (B - A, true -> predicted):"]
    lines += [f"  {true} -> {predicted}: {delta:+d}" for delta, true, predicted in cells[:10]] or ["  none"]
    lines.append(f"\n{document['changed_predictions']} test images changed their predicted class")
    return "\n".join(lines)


def _many_comparison_text(document: dict) -> str:
    width = max(len(row["run"]) for row in document["runs"])
    lines = [f"test accuracy on {document['test_images']:,} images (95% CI, {document['ci_method']}):"]
    for number, row in enumerate(document["runs"], start=1):
        low, high = row["accuracy_ci95"]
        lines.append(f"  {number}  {row['run']:<{width}}  {row['accuracy']:7.2%}  [{low:.2%}, {high:.2%}]")
    number_of = {row["run"]: number for number, row in enumerate(document["runs"], start=1)}
    lines += ["", f"pairwise exact McNemar tests, p-values {document['correction']} adjusted (p_holm):"]
    lines.append(f"  {'pair':<6} {'B - A':>7} {'only A':>7} {'only B':>7} {'p':>9} {'p_holm':>9}")
    for pair in document["pairwise"]:
        mark = "  *" if pair["different"] else ""
        lines.append(
            f"  {number_of[pair['a']]}-{number_of[pair['b']]:<4} {pair['accuracy_delta']:+7.2%} {pair['only_a_correct']:>7} "
            f"{pair['only_b_correct']:>7} {pair['p_value']:>9.3g} {pair['p_holm']:>9.3g}{mark}"
        )
    lines += ["", f"note: {document['note']}; * marks p_holm < {document['level']:g}"]
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    from fmnist.errors import ConfigError
    from fmnist.evaluation.compare import compare_runs

    if len(args.runs) < 2:
        raise ConfigError("fmnist compare needs at least two runs", "pass RUN_A RUN_B [RUN ...]")
    if len(args.runs) > 2:
        from fmnist.evaluation.compare_many import compare_many_runs

        if args.gallery:
            raise ConfigError("--gallery draws what changed between two runs", "pass exactly two runs with --gallery")
        many = compare_many_runs([Path(run) for run in args.runs], args.data).to_dict()
        if args.format == "json":
            _print_json(many)
        else:
            print(_many_comparison_text(many))
        return 0
    comparison = compare_runs(Path(args.runs[0]), Path(args.runs[1]), args.data)
    document = comparison.to_dict()
    if args.gallery:
        from fmnist.files import atomic_write_bytes
        from fmnist.reports.plots import figure_png, plot_changed_predictions

        atomic_write_bytes(Path(args.gallery), figure_png(plot_changed_predictions(comparison)))
        document["gallery"] = str(args.gallery)
    if args.format == "json":
        _print_json(document)
    else:
        print(_comparison_text(document))
        if args.gallery:
            print(f"gallery: {args.gallery}")
    return 0


def _overlay_name(path: str, method: str, used: set[str]) -> str:
    """A file name for an input's overlay: its stem (CSV rows get their row number), unique."""
    stem = Path(path.replace("#", "-row")).name
    for suffix in (".gz", ".csv", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
        stem = stem.removesuffix(suffix).removesuffix(suffix.upper())
    name, number = f"{stem}-{method}.png", 1
    while name in used:
        number += 1
        name = f"{stem}-{number}-{method}.png"
    used.add(name)
    return name


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from fmnist.errors import ConfigError
    from fmnist.evaluation.explain import explain, method_used
    from fmnist.files import atomic_write_bytes, refuse_overwriting
    from fmnist.inference.inputs import expand_inputs
    from fmnist.models import load_model
    from fmnist.reports.plots import figure_png, plot_explanation
    from fmnist.run import files_of_run_around

    model = load_model(args.run)
    names = model.card.class_names
    target = None
    if args.target is not None:
        if args.target not in names:
            raise ConfigError(f"--class {args.target!r} is not one of the model's classes", f"use one of: {', '.join(names)}")
        target = names.index(args.target)
    items = list(expand_inputs(args.images))
    good = [item for item in items if item.error is None]
    for item in items:
        if item.error is not None:
            print(f"fmnist: error: {item.error}", file=sys.stderr)
    if not good:
        return EXIT_USAGE  # each input's problem is printed above, one line each
    if len(good) > MAX_EXPLAIN_IMAGES:
        raise ConfigError(f"{len(good)} images to explain; at most {MAX_EXPLAIN_IMAGES} at a time", "pass fewer images")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; overlays go into a folder", "give a folder (it is created if missing)")
    method = method_used(model, args.method)
    used: set[str] = set()
    files = [out / _overlay_name(item.path, method, used) for item in good]
    # An overlay's name must not land on an input (x.png and x-gradcam.png both given) or the run.
    protected = [Path(item.path) for item in good if "#" not in item.path] + files_of_run_around(args.run)
    for file in files:
        refuse_overwriting(file, protected)
    explanation = explain(model, np.stack([item.image for item in good]), method=args.method, target=target)
    rows = []
    for index, (item, file) in enumerate(zip(good, files)):
        probabilities = explanation.probabilities[index]
        predicted, explained = int(probabilities.argmax()), int(explanation.targets[index])
        title = f"predicted {names[predicted]} {probabilities[predicted]:.2f}; {explanation.method} of {names[explained]}"
        atomic_write_bytes(file, figure_png(plot_explanation(item.image, explanation.maps[index], title)))
        rows.append({
            "path": item.path,
            "predicted": names[predicted],
            "confidence": float(probabilities[predicted]),
            "explained_class": names[explained],
            "method": explanation.method,
            "overlay": str(file),
        })
    if args.format == "json":
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['path']}: {row['predicted']} {row['confidence']:.3f} -> {row['overlay']}")
    return 0 if len(good) == len(items) else EXIT_USAGE


def register(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate", help="fit temperature scaling on a run's validation split and store it in its model file"
    )
    calibrate.add_argument("run", metavar="RUN_DIR")
    calibrate.add_argument("--data", metavar="PATH", help="the run's training data (default: where it was trained)")
    calibrate.add_argument(
        "--bins", type=ece_bins, default=15, help=f"equal-width confidence bins for the ECE, 1 to {MAX_ECE_BINS} (default 15)"
    )
    calibrate.add_argument("--format", choices=["text", "json"], default="text")
    calibrate.set_defaults(handler=cmd_calibrate)

    analyze = commands.add_parser("analyze", help="where a run errs: confusions, per-class accuracy, top losses, likely label errors")
    analyze.add_argument("run", metavar="RUN_DIR")
    analyze.add_argument("--data", metavar="PATH", help="test (and training) data: an IDX/CSV folder, an image folder, or a .csv/.npz file")
    analyze.add_argument("--min-count", type=positive_int, default=5, metavar="N", help="list confused pairs with at least N errors (default 5)")
    analyze.add_argument("--top-losses", type=positive_int, default=10, metavar="K", help="most confidently wrong images to list (default 10)")
    analyze.add_argument("--neighbours", type=non_negative_int, default=5, metavar="K",
                         help="nearest training images (model feature space) per listed error; 0 skips the search (default 5)")
    analyze.add_argument("--neighbour-errors", type=positive_int, default=5, metavar="N",
                         help="how many of the top losses get neighbours (default 5)")
    analyze.add_argument("--label-issues", type=non_negative_int, default=20, metavar="N", help="likely label errors to list (default 20; 0 skips the search, which needs the analysis extra)")
    analyze.add_argument("--format", choices=["text", "json"], default="text")
    analyze.set_defaults(handler=cmd_analyze)

    compare = commands.add_parser(
        "compare",
        help="compare runs on the same test images: two in detail (McNemar's test, per-class deltas), "
        "or N with every pair's McNemar test, Holm-Bonferroni adjusted",
    )
    compare.add_argument("runs", metavar="RUN", nargs="+", help="two or more run folders or model files")
    compare.add_argument("--data", metavar="PATH", help="test data: an IDX/CSV folder, an image folder, or a .csv/.npz file")
    compare.add_argument("--gallery", metavar="FILE.png", help="also draw the images whose prediction changed")
    compare.add_argument("--format", choices=["text", "json"], default="text")
    compare.set_defaults(handler=cmd_compare)

    explain = commands.add_parser("explain", help="saliency maps (Grad-CAM or occlusion) overlaid on the 28x28 input")
    explain.add_argument("run", metavar="RUN_DIR")
    explain.add_argument("images", metavar="IMAGE", nargs="+",
                         help="image files (28x28 dataset-style or photos, prepared as `fmnist predict` does), folders or Kaggle CSVs")
    explain.add_argument("--method", choices=["gradcam", "occlusion"], default="gradcam",
                         help="gradcam (last convolution; default) or occlusion (model-agnostic)")
    explain.add_argument("--class", dest="target", metavar="NAME", help="explain this class instead of the predicted one")
    explain.add_argument("--out", metavar="DIR", default="explanations", help="where the overlay PNGs go (default ./explanations)")
    explain.add_argument("--format", choices=["text", "json"], default="text")
    explain.set_defaults(handler=cmd_explain)

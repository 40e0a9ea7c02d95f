"""The run report: PNG figures in the run folder and one self-contained report.html."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fmnist.augment import AugmentConfig
from fmnist.evaluation.predictions import Predictions
from fmnist.reports import plots
from fmnist.reports.analysis_section import analysis_section
from fmnist.reports.html import embedded_png, escape, key_value_table, page, table
from fmnist.run import EpochRecord, Run


def _augment_config(run: Run) -> AugmentConfig:
    """The run's augmentation, for the samples figure; none for a folder without a config
    (an ensemble's)."""
    return run.config().augment if run.paths.config.is_file() else AugmentConfig(enabled=False)


def _history(run: Run) -> list[EpochRecord]:
    return run.history() if run.paths.epochs_log.is_file() else []


def _per_class_rows(report: dict, class_names: list[str]) -> list[list[str]]:
    rows = []
    for name in class_names:
        entry = report[name]
        rows.append(
            [name, f"{entry['precision']:.3f}", f"{entry['recall']:.3f}", f"{entry['f1-score']:.3f}", int(entry["support"])]
        )
    macro = report["macro avg"]
    rows.append(["macro avg", f"{macro['precision']:.3f}", f"{macro['recall']:.3f}", f"{macro['f1-score']:.3f}", int(macro["support"])])
    return rows


def _training_summary(history: list[EpochRecord]) -> str:
    total = sum(r.seconds for r in history)
    best = max((r for r in history if r.best), key=lambda r: r.epoch, default=history[-1])
    if best.val_loss is None or best.val_accuracy is None:  # --full: trained on train + validation, nothing held out
        return (
            f"<p>{len(history)} epochs in {total:.0f} s on the training and validation images together "
            "(--full): no validation split, so the recipe's fixed schedule ran to the end and the last "
            f"epoch's weights (epoch {history[-1].epoch}) were kept.</p>"
        )
    return (
        f"<p>{len(history)} epochs in {total:.0f} s; best validation loss {best.val_loss:.4f} "
        f"(accuracy {best.val_accuracy:.2%}) at epoch {best.epoch}, whose weights were kept.</p>"
    )


def build_figures(run_dir: Path, predictions: Predictions, metrics: dict) -> dict[str, bytes]:
    """Render the report's figures as PNG bytes, keyed by file name."""
    run = Run.create(run_dir)
    history = _history(run)
    figures = {
        "confusion_matrix.png": plots.plot_confusion_matrix(np.array(metrics["confusion_matrix"]), predictions.class_names),
        "correct_predictions.png": plots.plot_correct_predictions(predictions),
        "confident_mistakes.png": plots.plot_top_losses(predictions, 24),
        "most_confused.png": plots.plot_most_confused(predictions),
        "augmentation.png": plots.plot_augmentation(predictions.images[:6], _augment_config(run)),
    }
    if history:
        figures["learning_curves.png"] = plots.plot_learning_curves([record.to_dict() for record in history])
    return {name: plots.figure_png(figure) for name, figure in figures.items()}


def render_report(
    run_dir: Path, metrics: dict, pngs: dict[str, bytes], *, title: str | None = None, analysis: list[str] = ()
) -> str:
    """The report page; ``analysis`` is HTML from reports.analysis_section, placed after the confusions."""
    # A run folder's files are shown when present (an ensemble's folder has none of them);
    # a damaged one is a RunError naming it, not a section silently left out.
    run = Run.create(run_dir)
    config = run.config_values() if run.paths.config.is_file() else {}
    run_info = run.provenance().document if run.paths.provenance.is_file() else {}
    history = _history(run)
    low, high = metrics["test_accuracy_ci95"]
    sections = [
        f"<h1>{escape(title or 'fmnist run ' + run_dir.name)}</h1>",
        f"<p class=muted>{escape(metrics.get('model', ''))} · evaluated {escape(metrics.get('evaluated', ''))}</p>",
        (f"<p class=big>Test accuracy {metrics['test_accuracy']:.2%} "
        f"<span class=muted>(95% CI {low:.2%} – {high:.2%}, {metrics['test_images']:,} images, "
        f"{metrics['errors']:,} errors)</span></p>"),
    ]
    if metrics.get("members"):
        rows = [
            (m["model_file"], m["model"], f"{m['test_accuracy']:.2%}",
             "?" if m["train_seconds"] is None else f"{m['train_seconds'] / 60:.1f}")
            for m in metrics["members"]
        ]
        sections.append(
            "<h2>Ensemble members</h2><p>Class probabilities averaged over the members below.</p>"
            + table(["model file", "model", "test accuracy alone", "training minutes"], rows)
        )
    data = metrics.get("data", {})
    if data:
        sections.append("<h2>Test data</h2>" + key_value_table(data))
    if history:
        sections.append("<h2>Training</h2>" + _training_summary(history))
    if "learning_curves.png" in pngs:
        sections.append(embedded_png(pngs["learning_curves.png"], "learning curves"))
    sections.append("<h2>Confusions</h2>")
    sections.append(embedded_png(pngs["confusion_matrix.png"], "confusion matrix"))
    sections.append(
        "<h3>Most confused pairs</h3>"
        + table(["true class", "predicted as", "count"], [(m["true"], m["predicted"], m["count"]) for m in metrics["most_confused"][:10]])
    )
    if "most_confused.png" in pngs:
        sections.append(embedded_png(pngs["most_confused.png"], "most confused pairs"))
    sections.append(
        "<h3>Per class</h3>"
        + table(["class", "precision", "recall", "F1", "support"], _per_class_rows(metrics["classification_report"], metrics["class_names"]))
    )
    sections.extend(metrics.get("extra_sections", []))
    sections.extend(analysis)
    sections.append("<h2>Galleries</h2>")
    if "top_losses.png" not in pngs:  # the analysis shows them, with Grad-CAM
        sections.append(embedded_png(pngs["confident_mistakes.png"], "most confidently wrong predictions"))
    sections.append(embedded_png(pngs["correct_predictions.png"], "correct predictions"))
    sections.append(embedded_png(pngs["augmentation.png"], "augmentation samples"))
    if config:
        sections.append("<h2>Configuration</h2>" + key_value_table({k: json.dumps(v) for k, v in config.items()}))
    if run_info:
        sections.append("<h2>Provenance</h2>" + key_value_table({k: json.dumps(v) for k, v in run_info.items()}))
    return page(title or f"fmnist report {run_dir.name}", sections)


def check_report_inputs(run_dir: str | os.PathLike[str]) -> None:
    """Read every run file the report shows (config, history, provenance); RunError names a
    damaged one. Called before an evaluation replaces metrics.json, so nothing is half-written."""
    run_dir = Path(run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    run = Run.create(folder)
    if run.paths.config.is_file():
        run.config()
    if run.paths.epochs_log.is_file():
        run.history()
    if run.paths.provenance.is_file():
        run.provenance()


def write_run_report(run_dir: str | Path, predictions: Predictions, metrics: dict, *, title: str | None = None) -> Path:
    """Write figures/*.png and report.html into ``run_dir``; return the report's path."""
    run_dir = Path(run_dir)
    pngs = build_figures(run_dir, predictions, metrics)
    analysis = analysis_section(run_dir, predictions, metrics)
    pngs.update(analysis.pngs)
    run = Run.create(run_dir)
    for name, png in pngs.items():
        run.write_figure(name, png)
    return run.write_report(render_report(run_dir, metrics, pngs, title=title, analysis=analysis.html))

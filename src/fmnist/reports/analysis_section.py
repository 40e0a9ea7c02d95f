"""The report's "Where the model errs" sections: calibration, per-class accuracy with
intervals, the tops confusion, the top-losses gallery with Grad-CAM, nearest training images
of a few errors and likely label errors.

Kept cheap so that `fmnist train` does not slow down: everything but two steps is a view of
the test predictions already made. The two steps that run the model are capped: Grad-CAM
on GALLERY_IMAGES images and a feature pass over the first NEIGHBOUR_POOL training images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmnist import extras
from fmnist.errors import FmnistError, RunError
from fmnist.evaluation.interpretation import (
    find_label_issues,
    nearest_neighbours,
    penultimate_features,
    per_class_accuracy,
    tops_confusion,
    unit_rows,
)
from fmnist.evaluation.predictions import Predictions
from fmnist.models import LoadedModel, load_model
from fmnist.reports import plots
from fmnist.reports.html import embedded_png, escape, table
from fmnist.run import Run

log = logging.getLogger(__name__)

GALLERY_IMAGES = 24  # top losses shown with Grad-CAM
NEIGHBOUR_ERRORS = 4  # errors shown with their nearest training images
NEIGHBOURS = 5
NEIGHBOUR_POOL = 5_000  # training images searched: ~3 s of one CPU core for fast_cnn with flip TTA
LABEL_ISSUE_IMAGES = 24


@dataclass
class AnalysisSection:
    html: list[str] = field(default_factory=list)
    pngs: dict[str, bytes] = field(default_factory=dict)

    def figure(self, name: str, figure, alt: str) -> None:
        self.pngs[name] = plots.figure_png(figure)
        self.html.append(embedded_png(self.pngs[name], alt))


def _single_model(run_dir: Path, predictions: Predictions, metrics: dict) -> LoadedModel | None:
    """The run's own model when the predictions are that model's alone (not an ensemble or
    a specialist combination), else None: its saliency would not explain the predictions."""
    if metrics.get("members") or metrics.get("specialist") or not Run.create(run_dir).paths.model.is_file():
        return None
    model = load_model(run_dir)
    return model if model.card.class_names == predictions.class_names else None


def _training_images(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    from fmnist.data import load

    try:
        root = Run(run_dir).provenance().data.get("root")
        if root is None:
            raise RunError(f"{run_dir}: its run.json names no training data", "train the run again")
        train = load("train", root, download=False)
    except FmnistError as error:
        log.warning("report: no nearest training images (%s)", error)
        return None
    return train.images[:NEIGHBOUR_POOL], train.labels[:NEIGHBOUR_POOL]


def _calibration(section: AnalysisSection, calibration: dict) -> None:
    temperature = calibration["temperature"]
    section.html.append(
        "<h2>Calibration</h2><p>Expected calibration error (ECE, "
        f"{calibration['bins']} equal-width bins) and negative log-likelihood on the test set, "
        "without and with the temperature stored in the model file (fitted on the validation split; "
        "the test set is never used for fitting).</p>"
        + table(
            ["", "T", "ECE", "NLL"],
            [
                ("raw", "1.000", f"{calibration['ece_before']:.2%}", f"{calibration['nll_before']:.4f}"),
                ("calibrated", f"{temperature:.3f}", f"{calibration['ece_after']:.2%}", f"{calibration['nll_after']:.4f}"),
            ],
        )
    )
    section.figure("reliability.png", plots.plot_calibration(calibration), "reliability diagram")


def _top_losses(section: AnalysisSection, predictions: Predictions, model: LoadedModel | None) -> None:
    from fmnist.evaluation.explain import explain

    chosen = predictions.top_losses(GALLERY_IMAGES)
    maps = None if model is None or len(chosen) == 0 else explain(model, predictions.images[chosen]).maps
    note = " Overlay: Grad-CAM of the predicted class (red: the evidence for it)." if maps is not None else ""
    section.html.append(f"<h3>Most confidently wrong</h3><p>The test images with the highest loss.{note}</p>")
    section.figure("top_losses.png", plots.plot_top_losses(predictions, GALLERY_IMAGES, maps=maps), "top losses")


def _neighbours(section: AnalysisSection, run_dir: Path, predictions: Predictions, model: LoadedModel) -> None:
    errors = predictions.top_losses(NEIGHBOUR_ERRORS)
    train = _training_images(run_dir) if len(errors) else None
    if train is None:
        return
    train_images, train_labels = train
    # Flip-averaged features even for a model with shift views: a neighbour search needs one
    # feature space for pool and queries, not exactly that of the averaged logits, and the
    # ten views per pool image took 3 of the fast recipe's 60 seconds.
    flip = model.card.tta_flip
    pool = unit_rows(penultimate_features(model.module, train_images, tta_flip=flip))
    query = penultimate_features(model.module, predictions.images[errors], tta_flip=flip)
    names = predictions.class_names
    tiles, titles = [], []
    for index, neighbours in zip(errors, nearest_neighbours(query, pool, train_labels, NEIGHBOURS)):
        tiles.append(predictions.images[index])
        titles.append(f"test #{index}\ntrue {names[predictions.labels[index]]}\npred {names[predictions.predicted[index]]}")
        for neighbour in neighbours:
            tiles.append(train_images[neighbour.train_index])
            titles.append(f"train #{neighbour.train_index}\n{names[neighbour.label]}\nsim {neighbour.similarity:.2f}")
    section.html.append(
        "<h3>Nearest training images of the worst errors</h3>"
        f"<p>Each row: a misclassified test image, then the {NEIGHBOURS} training images closest to it in the "
        f"model's feature space (cosine similarity of the classifier's input; first {len(train_images):,} "
        "training images searched): what the model thinks it looks like.</p>"
    )
    section.figure(
        "nearest_training_images.png",
        plots.plot_image_grid(np.stack(tiles), titles, columns=NEIGHBOURS + 1),
        "nearest training images",
    )


def _label_issues(section: AnalysisSection, predictions: Predictions) -> None:
    if not extras.available("analysis"):
        # The core install still writes the report; the section says what it needs.
        note = extras.note_missing("analysis", "the report's likely-label-errors section (cleanlab)")
        section.html.append(f"<h3>Likely label errors</h3><p class=muted>{escape(note[0].upper() + note[1:])}.</p>")
        return
    issues = find_label_issues(predictions)
    names = predictions.class_names
    section.html.append(
        "<h3>Likely label errors</h3>"
        f"<p>{len(issues)} test images whose label the model contradicts (cleanlab's confident learning on the "
        "test probabilities). Candidates to inspect, not proven errors: the model's own confident mistakes "
        "are among them. Most suspicious first.</p>"
    )
    shown = issues[:LABEL_ISSUE_IMAGES]
    if shown:
        titles = [f"#{i.index} label {names[i.given]}\nmodel {names[i.predicted]} {i.confidence:.2f}" for i in shown]
        images = predictions.images[[i.index for i in shown]]
        section.figure("label_issues.png", plots.plot_image_grid(images, titles), "likely label errors")


def analysis_section(run_dir: Path, predictions: Predictions, metrics: dict) -> AnalysisSection:
    """The HTML and PNGs of the analysis sections for a run's test predictions."""
    section = AnalysisSection()
    if metrics.get("calibration"):
        _calibration(section, metrics["calibration"])
    section.html.append("<h2>Where the model errs</h2>")
    rows = [
        (row.name, f"{row.accuracy:.2%}", f"{row.ci95[0]:.2%} – {row.ci95[1]:.2%}", row.support)
        for row in per_class_accuracy(predictions)
    ]
    section.html.append("<h3>Per-class accuracy</h3>" + table(["class", "accuracy", "95% bootstrap CI", "images"], rows))
    classes, matrix = tops_confusion(predictions)
    if len(classes) > 1:
        section.html.append(
            "<h3>The tops</h3><p>Confusions among the four upper-body classes (rows: true class).</p>"
            + table(["true \\ predicted", *classes], [(name, *map(int, row)) for name, row in zip(classes, matrix)])
        )
    model = _single_model(run_dir, predictions, metrics)
    _top_losses(section, predictions, model)
    if model is not None:
        _neighbours(section, run_dir, predictions, model)
    _label_issues(section, predictions)
    return section




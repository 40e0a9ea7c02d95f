"""Figures for the report. Each function returns a matplotlib Figure and draws nothing else.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so no global
state and no display are involved.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from fmnist.augment import AugmentConfig, augment_batch
from fmnist.data.contract import to_model_input
from fmnist.evaluation.compare import Comparison
from fmnist.evaluation.predictions import Predictions


def figure_png(figure: Figure, *, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str]) -> Figure:
    figure = Figure(figsize=(8, 7))
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names)
    display.plot(ax=axes, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45)
    axes.set_title("Confusion matrix (rows: true class)")
    return figure


def plot_learning_curves(history: list[dict]) -> Figure:
    figure = Figure(figsize=(12, 3.6))
    epochs = [record["epoch"] for record in history]
    loss_axes, accuracy_axes, lr_axes = figure.subplots(1, 3)
    # A --full run has no validation split: its records hold None there, and only training curves.
    validated = [r for r in history if r.get("val_loss") is not None]
    loss_axes.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train (augmented)")
    if validated:
        loss_axes.plot([r["epoch"] for r in validated], [r["val_loss"] for r in validated], marker="o", label="validation")
    loss_axes.set(title="Loss", xlabel="epoch")
    accuracy_axes.plot(epochs, [r["train_accuracy"] for r in history], marker="o", label="train (augmented)")
    if validated:
        accuracy_axes.plot(
            [r["epoch"] for r in validated], [r["val_accuracy"] for r in validated], marker="o", label="validation"
        )
    accuracy_axes.set(title="Accuracy", xlabel="epoch")
    lr_axes.plot(epochs, [r["lr"] for r in history], marker="o")
    lr_axes.set(title="Learning rate (end of epoch)", xlabel="epoch", yscale="log")
    best = [r["epoch"] for r in history if r.get("best")]
    if best:
        for axes in (loss_axes, accuracy_axes):
            axes.axvline(best[-1], color="grey", linestyle="--", linewidth=1)
    for axes in (loss_axes, accuracy_axes):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _salient(saliency_map: np.ndarray) -> np.ma.MaskedArray:
    """Hide the weakest 15% of the range, so the overlay colours only the evidence and the
    garment stays visible elsewhere."""
    return np.ma.masked_less(saliency_map, 0.15)


def plot_image_grid(
    images: np.ndarray, titles: list[str], *, columns: int = 8, title: str = "", maps: np.ndarray | None = None
) -> Figure:
    """A grid of 28x28 images, each with a (multi-line) caption; ``maps`` (N, 28, 28) in
    [0, 1], when given, are overlaid in colour (saliency)."""
    count = len(images)
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(columns * 1.45, rows * 1.75))
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.axis("off")
        if index < count:
            axes.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            if maps is not None:
                axes.imshow(_salient(maps[index]), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes.set_title(titles[index], fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_correct_predictions(predictions: Predictions, *, count: int = 24, seed: int = 0) -> Figure:
    correct = np.flatnonzero(predictions.correct)
    chosen = np.random.default_rng(seed).choice(correct, size=min(count, len(correct)), replace=False)
    names = predictions.class_names
    titles = [f"{names[predictions.predicted[i]]}\n{predictions.confidence[i]:.2f}" for i in chosen]
    return plot_image_grid(predictions.images[chosen], titles, title="Correct predictions (random sample)")


def plot_top_losses(predictions: Predictions, k: int = 24, *, maps: np.ndarray | None = None, columns: int = 8) -> Figure:
    """The ``k`` most confidently wrong test images (highest loss first), each captioned with
    its test index, true class, prediction and probability; ``maps`` (k, 28, 28) in [0, 1]
    (saliency of the shown images, e.g. Grad-CAM), when given, are overlaid."""
    chosen = predictions.top_losses(k)
    names = predictions.class_names
    titles = [
        f"#{i} true {names[predictions.labels[i]]}\npred {names[predictions.predicted[i]]} {predictions.confidence[i]:.2f}"
        for i in chosen
    ]
    if maps is not None and len(maps) != len(chosen):
        raise ValueError(f"maps: expected one per shown image ({len(chosen)}), got {len(maps)}")
    return plot_image_grid(predictions.images[chosen], titles, columns=columns, maps=maps, title="Top losses")


def plot_most_confused(predictions: Predictions, *, min_count: int = 1, limit: int = 15) -> Figure:
    """Horizontal bars of the most frequent (true -> predicted) confusions, largest on top."""
    pairs = predictions.most_confused(min_count)[:limit]
    figure = Figure(figsize=(6.4, 0.9 + 0.32 * max(len(pairs), 1)))
    axes = figure.add_subplot()
    labels = [f"{true} \u2192 {predicted}" for true, predicted, _ in pairs]
    counts = [count for _, _, count in pairs]
    bars = axes.barh(range(len(pairs)), counts, color="#4878a8")
    axes.bar_label(bars, padding=2, fontsize=8)
    axes.set_yticks(range(len(pairs)), labels, fontsize=8)
    axes.invert_yaxis()  # the largest first, at the top
    axes.set(xlabel="test images", title="Most confused (true \u2192 predicted)")
    if not pairs:
        axes.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=axes.transAxes)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def plot_reliability(before: dict, after: dict | None, *, temperature: float = 1.0) -> Figure:
    """Reliability diagram: accuracy against mean confidence per confidence bin, before and
    after temperature scaling (dicts as calibration.ReliabilityDiagram fields)."""
    figure = Figure(figsize=(5.2, 4.6))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    curves = [("T = 1 (raw)", before)] + ([(f"T = {temperature:.2f} (fitted on validation)", after)] if after else [])
    for label, diagram in curves:
        points = [(c, a) for c, a, n in zip(diagram["confidence"], diagram["accuracy"], diagram["counts"]) if n]
        axes.plot([c for c, _ in points], [a for _, a in points], marker="o", label=label)
    axes.set(xlabel="mean confidence in bin", ylabel="accuracy in bin", xlim=(0, 1), ylim=(0, 1.02),
             title="Reliability (test set)")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_calibration(calibration: dict) -> Figure:
    """The reliability diagram of a calibration summary (evaluation.calibration's
    ``calibration_summary``, as in metrics.json): the calibrated curve only when a
    temperature other than 1 was fitted."""
    temperature = calibration["temperature"]
    after = calibration["reliability_after"] if temperature != 1.0 else None
    return plot_reliability(calibration["reliability_before"], after, temperature=temperature)


def plot_changed_predictions(comparison: Comparison, *, count: int = 32) -> Figure:
    """Images whose predicted class differs between A and B: fixes (B right) first, then breaks."""
    changed = comparison.changed()
    fixed = changed[comparison.b.correct[changed]]
    broken = changed[comparison.a.correct[changed]]
    neither = changed[~comparison.a.correct[changed] & ~comparison.b.correct[changed]]
    chosen = np.concatenate([fixed, broken, neither])[:count]
    names = comparison.class_names
    titles = [
        f"true {names[comparison.a.labels[i]]}\nA {names[comparison.a.predicted[i]]} | B {names[comparison.b.predicted[i]]}"
        for i in chosen
    ]
    title = f"Changed predictions: B fixed {len(fixed)}, broke {len(broken)}, other {len(neither)}"
    return plot_image_grid(comparison.a.images[chosen], titles, title=title)


def plot_explanation(image: np.ndarray, saliency_map: np.ndarray, title: str) -> Figure:
    """One image: the input the model saw, and the saliency map overlaid on it."""
    figure = Figure(figsize=(4.2, 2.4))
    plain, overlaid = figure.subplots(1, 2)
    for axes in (plain, overlaid):
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    overlaid.imshow(_salient(saliency_map), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for axes in (plain, overlaid):
        axes.axis("off")
    plain.set_title("input (28x28)", fontsize=8)
    overlaid.set_title("saliency", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def plot_augmentation(images: np.ndarray, config: AugmentConfig, *, copies: int = 5, seed: int = 0) -> Figure:
    """Each row: an original image, then ``copies`` augmented versions of it."""
    generator = torch.Generator().manual_seed(seed)
    originals = to_model_input(images)
    rows = [originals]
    for _ in range(copies):
        rows.append(augment_batch(originals, config, generator=generator))
    grid = torch.stack(rows, dim=1).squeeze(2)  # (images, 1 + copies, 28, 28)
    tiles = (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy().reshape(-1, 28, 28)
    titles = ["original" if i % (copies + 1) == 0 else "augmented" for i in range(len(tiles))]
    state = "on" if config.enabled else "off (training used none)"
    return plot_image_grid(tiles, titles, columns=copies + 1, title=f"Training augmentation ({state})")

"""Interpretation's figures and summaries: each plot returns a pyplot-free Figure whose
artists carry the data of the view it draws; repr and _repr_html_ are short and escaped."""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from fmnist.data import load
from fmnist.evaluation import Comparison, Interpretation, Predictions, evaluate_run
from fmnist.models import load_model


@pytest.fixture(scope="module")
def interpretation(tiny_run: Path) -> Interpretation:
    return Interpretation.from_run(tiny_run, tiny_run.parent / "data")


def _no_pyplot_figures() -> None:
    import sys

    if "matplotlib.pyplot" in sys.modules:  # imported by someone else: none of ours may be open
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_confusion_matrix_figure_shows_every_count(interpretation: Interpretation):
    figure = interpretation.plot_confusion_matrix()
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    names = interpretation.class_names
    assert [t.get_text() for t in axes.get_xticklabels()] == names
    assert [t.get_text() for t in axes.get_yticklabels()] == names
    cells = sorted(int(t.get_text()) for t in axes.texts)
    assert cells == sorted(interpretation.predictions.confusion_matrix().ravel().tolist())
    _no_pyplot_figures()


def test_top_losses_figure_captions_the_worst_errors(interpretation: Interpretation):
    predictions = interpretation.predictions
    k = 5
    expected = interpretation.top_losses(k)
    assert len(expected) == k  # the tiny run makes errors enough
    figure = interpretation.plot_top_losses(k, columns=4)
    shown = [axes for axes in figure.axes if axes.images]
    assert len(shown) == k and len(figure.axes) == 8  # two rows of four, three left blank
    for axes, index in zip(shown, expected):
        title = axes.get_title()
        assert title.startswith(f"#{index} true {predictions.class_names[predictions.labels[index]]}")
        assert f"pred {predictions.class_names[predictions.predicted[index]]}" in title
        np.testing.assert_array_equal(axes.images[0].get_array(), predictions.images[index])
    with_saliency = interpretation.plot_top_losses(3, saliency=True)
    assert all(len(axes.images) == 2 for axes in with_saliency.axes if axes.images)  # image + Grad-CAM overlay
    with pytest.raises(ValueError, match="k must be at least 1"):
        interpretation.plot_top_losses(0)


def test_most_confused_figure_has_one_bar_per_pair_largest_first(interpretation: Interpretation):
    pairs = interpretation.most_confused(1)[:4]
    figure = interpretation.plot_most_confused(limit=4)
    axes = figure.axes[0]
    assert [round(patch.get_width()) for patch in axes.patches] == [count for _, _, count in pairs]
    assert [t.get_text() for t in axes.get_yticklabels()] == [f"{a} \u2192 {b}" for a, b, _ in pairs]
    empty = interpretation.plot_most_confused(min_count=10**6).axes[0]
    assert len(empty.patches) == 0 and [t.get_text() for t in empty.texts] == ["no confusions"]


def test_reliability_figure_draws_the_calibrated_curve_only_with_a_temperature(tiny_run: Path):
    test = load("test", tiny_run.parent / "data")
    model = load_model(tiny_run)
    raw = Interpretation.from_model(model, test).plot_reliability()
    labels = [line.get_label() for line in raw.axes[0].get_lines()]
    assert labels == ["perfect calibration", "T = 1 (raw)"]
    scaled = dataclasses.replace(model, card=dataclasses.replace(model.card, temperature=2.0))
    figure = Interpretation.from_model(scaled, test).plot_reliability(bins=5)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines][2] == "T = 2.00 (fitted on validation)"
    assert len(lines[1].get_xdata()) <= 5  # one point per non-empty bin


def test_reprs_are_one_line_summaries(interpretation: Interpretation):
    predictions = interpretation.predictions
    text = repr(predictions)
    assert text.startswith("Predictions(100 images, 10 classes, accuracy ") and "\n" not in text
    assert f"{predictions.accuracy():.2%}" in text and "array" not in text
    assert repr(interpretation).startswith("Interpretation(seed_cnn from run/model.safetensors: 100 test images")
    comparison = Comparison(predictions, predictions, name_a="runs/a", name_b="runs/b")
    assert "McNemar p=1" in repr(comparison) and "0 predictions changed" in repr(comparison)
    evaluation = evaluate_run(interpretation.model.path, interpretation.data, write=False)
    predictions_again, metrics = evaluation  # still unpacks like a tuple
    assert metrics is evaluation.metrics and predictions_again is evaluation.predictions
    assert repr(evaluation) == f"Evaluation(seed_cnn: {predictions_again!r})"
    assert "<table>" in evaluation._repr_html_()


def test_html_escapes_class_names_and_paths():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=30).astype(np.float32)
    names = ["<b>bold</b>", "a & b", "plain"]
    predictions = Predictions(probabilities, np.arange(30) % 3, np.zeros((30, 28, 28), np.uint8), names)
    page = predictions._repr_html_()
    for name in names[:2]:
        assert html.escape(name) in page and name not in page
    other = Predictions(probabilities[::-1].copy(), np.arange(30) % 3, np.zeros((30, 28, 28), np.uint8), names)
    comparison_page = Comparison(predictions, other, name_a="<run a>", name_b="runs/b&c")._repr_html_()
    assert "&lt;run a&gt;" in comparison_page and "runs/b&amp;c" in comparison_page
    assert "<run a>" not in comparison_page and html.escape(names[0]) in comparison_page

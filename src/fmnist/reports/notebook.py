"""Short text and HTML summaries of results, for ``repr`` and Jupyter's ``_repr_html_``.

Result objects (Predictions, Interpretation, Comparison) call these on use, so a notebook
shows a small table instead of their arrays. Every class name and path is escaped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmnist.reports.html import escape, table

if TYPE_CHECKING:
    from fmnist.evaluation.compare import Comparison
    from fmnist.evaluation.predictions import Predictions

MOST_CONFUSED_ROWS = 5


def predictions_summary(predictions: Predictions) -> str:
    """One line: images, classes, accuracy with its 95% interval, errors."""
    count = len(predictions.labels)
    if count == 0:
        return f"Predictions(0 images, {len(predictions.class_names)} classes)"
    low, high = predictions.accuracy_ci()
    return (
        f"Predictions({count:,} images, {len(predictions.class_names)} classes, accuracy "
        f"{predictions.accuracy():.2%} (95% CI {low:.2%}\u2013{high:.2%}), {int((~predictions.correct).sum()):,} errors)"
    )


def predictions_html(predictions: Predictions) -> str:
    """The summary line, per-class recall and the most confused pairs as HTML tables."""
    parts = [f"<p><b>{escape(predictions_summary(predictions))}</b></p>"]
    if len(predictions.labels):
        rows = []
        for label, name in enumerate(predictions.class_names):
            mask = predictions.labels == label
            recall = f"{predictions.correct[mask].mean():.2%}" if mask.any() else "\u2013"
            rows.append((name, int(mask.sum()), recall))
        parts.append(table(["class", "images", "accuracy (recall)"], rows))
        confused = predictions.most_confused(1)[:MOST_CONFUSED_ROWS]
        if confused:
            parts.append(table(["true class", "predicted as", "count"], confused))
    return "<div>" + "".join(parts) + "</div>"


def comparison_summary(comparison: Comparison) -> str:
    """One line: both accuracies, the difference, McNemar's p and the changed predictions."""
    mcnemar = comparison.mcnemar()
    return (
        f"Comparison(A={comparison.name_a}: {comparison.a.accuracy():.2%}, B={comparison.name_b}: "
        f"{comparison.b.accuracy():.2%}, B\u2212A {100 * (comparison.b.accuracy() - comparison.a.accuracy()):+.2f} points "
        f"on {len(comparison.a.labels):,} images, McNemar p={mcnemar.p_value:.3g}, "
        f"{len(comparison.changed()):,} predictions changed)"
    )


def comparison_html(comparison: Comparison) -> str:
    """The two runs, McNemar's test and the per-class accuracy deltas as HTML tables."""
    mcnemar = comparison.mcnemar()
    overview = table(
        ["", "run", "accuracy"],
        [("A", comparison.name_a, f"{comparison.a.accuracy():.2%}"), ("B", comparison.name_b, f"{comparison.b.accuracy():.2%}")],
    )
    test = (
        f"<p>B\u2212A {100 * (comparison.b.accuracy() - comparison.a.accuracy()):+.2f} points on "
        f"{len(comparison.a.labels):,} test images; exact McNemar p = {mcnemar.p_value:.3g} "
        f"(only A right: {mcnemar.only_a_correct}, only B right: {mcnemar.only_b_correct}); "
        f"{len(comparison.changed()):,} predictions changed.</p>"
    )
    deltas = table(
        ["class", "A", "B", "B\u2212A (points)", "images"],
        [
            (row["class"], f"{row['accuracy_a']:.2%}", f"{row['accuracy_b']:.2%}", f"{100 * row['delta']:+.2f}", row["support"])
            for row in comparison.per_class_deltas()
        ],
    )
    return "<div>" + overview + test + deltas + "</div>"

"""What an evaluation returns: the test predictions and the metrics document, as a named
pair that still unpacks like the plain tuple (``predictions, metrics = evaluate_run(...)``)
and shows a one-line summary, or tables in Jupyter, instead of its arrays."""

from __future__ import annotations

from typing import NamedTuple

from fmnist.evaluation.predictions import Predictions


class Evaluation(NamedTuple):
    predictions: Predictions  # the test predictions, computed once
    metrics: dict  # the metrics.json document (written to the run folder only with write=True)

    def __repr__(self) -> str:
        model = self.metrics.get("model") or "model"
        return f"Evaluation({model}: {self.predictions!r})"

    def _repr_html_(self) -> str:  # Jupyter
        from fmnist.reports.html import escape

        model = self.metrics.get("model") or "model"
        return f"<div><p>Evaluation of <b>{escape(model)}</b></p>{self.predictions._repr_html_()}</div>"

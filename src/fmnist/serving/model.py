"""Loading the served model through fmnist.inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmnist.inference.predictor import Predictor, load_predictor

if TYPE_CHECKING:
    from fmnist.serving.settings import ServeSettings


def load_serving_predictor(settings: ServeSettings) -> Predictor:
    """The predictor for ``settings.model``; raises FmnistError (one line) for a bad path."""
    return load_predictor(settings.model, backend=settings.backend, threads=settings.threads)

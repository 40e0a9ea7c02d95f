"""Predictor backends that misbehave on purpose, shared by the inference and server tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist.inference.predictor import Predictor


class NaNOnSecondImage(Predictor):
    """Finite answers for a batch of one, NaN for the second image of a larger batch: what
    a model with finite weights can still do on some input, after its load-time check passed."""

    backend, name, class_names, temperature, tta_flip = "test", "nan", [f"c{i}" for i in range(10)], 1.0, False
    source = Path("nan.model")

    def model_logits(self, inputs: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(inputs), 10), np.float32)
        logits[1:2] = np.nan
        return logits

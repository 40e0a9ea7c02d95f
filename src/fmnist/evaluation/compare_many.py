"""Compare N models on the same test images: each one's accuracy with its bootstrap
interval, and McNemar's exact test for every pair with Holm-Bonferroni adjusted p-values.

With K = N(N-1)/2 pairs, K tests at the 5% level find some "significant" difference far
more often than 5% of the time even when every model is as good as the others. Holm's
step-down procedure controls that family-wise error rate: sort the raw p-values
p(1) <= ... <= p(K), adjust p(i) to max over j <= i of min(1, (K - j + 1) p(j)), and call
a pair different when its adjusted p-value is below the level. It is uniformly more
powerful than plain Bonferroni (K p) and assumes nothing about how the tests depend on
each other (they share models, so they do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fmnist.data import load
from fmnist.errors import ConfigError
from fmnist.evaluation.compare import Comparison, mcnemar_test, run_predictions
from fmnist.evaluation.evaluate import BOOTSTRAP_RESAMPLES
from fmnist.evaluation.predictions import Predictions
from fmnist.models import resolve_model_path

CORRECTION = "Holm-Bonferroni"


def holm_adjusted(p_values: list[float] | np.ndarray) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (each in [0, 1])."""
    p = np.asarray(p_values, dtype=np.float64)
    count = len(p)
    if count == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = (count - np.arange(count)) * p[order]  # (K - j + 1) p(j), j 1-based
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(count)
    adjusted[order] = adjusted_sorted
    return adjusted.tolist()


@dataclass
class ManyComparison:
    """N >= 2 prediction sets on the same test images (checked pairwise as ``Comparison`` does)."""

    predictions: list[Predictions]
    names: list[str]

    def __post_init__(self) -> None:
        if len(self.predictions) < 2 or len(self.predictions) != len(self.names):
            raise ConfigError(
                f"a comparison needs at least two models, got {len(self.predictions)}", "pass two or more runs"
            )
        first = self.predictions[0]
        for other, name in zip(self.predictions[1:], self.names[1:], strict=True):
            Comparison(first, other, name_a=self.names[0], name_b=name)  # same images, same classes

    def pairs(self) -> list[tuple[int, int]]:
        """Index pairs (i, j), i < j, in reading order."""
        count = len(self.predictions)
        return [(i, j) for i in range(count) for j in range(i + 1, count)]

    def pair(self, i: int, j: int) -> Comparison:
        """The full two-model comparison of models i and j (per-class deltas, changes...)."""
        return Comparison(self.predictions[i], self.predictions[j], name_a=self.names[i], name_b=self.names[j])

    def to_dict(self, *, level: float = 0.05) -> dict:
        runs = []
        for name, predictions in zip(self.names, self.predictions, strict=True):
            low, high = predictions.accuracy_ci(resamples=BOOTSTRAP_RESAMPLES)
            runs.append({"run": name, "accuracy": predictions.accuracy(), "accuracy_ci95": [low, high]})
        tests = [mcnemar_test(self.predictions[i].correct, self.predictions[j].correct) for i, j in self.pairs()]
        adjusted = holm_adjusted([test.p_value for test in tests])
        pairwise = [
            {
                "a": self.names[i],
                "b": self.names[j],
                "accuracy_delta": runs[j]["accuracy"] - runs[i]["accuracy"],
                "only_a_correct": test.only_a_correct,
                "only_b_correct": test.only_b_correct,
                "p_value": test.p_value,
                "p_holm": p_holm,
                "different": p_holm < level,
            }
            for (i, j), test, p_holm in zip(self.pairs(), tests, adjusted, strict=True)
        ]
        return {
            "test_images": len(self.predictions[0].labels),
            "runs": runs,
            "ci_method": f"percentile bootstrap over test images, {BOOTSTRAP_RESAMPLES} resamples, seed 0",
            "test": "exact two-sided McNemar (binomial on discordant pairs), every pair",
            "correction": CORRECTION,
            "level": level,
            "note": (
                f"{len(pairwise)} pairwise tests: p_holm is the {CORRECTION} adjusted p-value, which keeps the chance "
                f"of calling any equal pair different at or below {level:g} over all of them; judge pairs by p_holm, "
                "not by the raw p_value"
            ),
            "pairwise": pairwise,
        }


def compare_many_runs(runs: list[str | os.PathLike[str]], data: str | os.PathLike[str] | None = None) -> ManyComparison:
    """Compare runs on one test split, each through its stored test predictions when current
    (else predicted as `fmnist evaluate` does)."""
    for run in runs:
        resolve_model_path(run)  # refuse a bad path before loading the data
    test = load("test", data)
    return ManyComparison([run_predictions(run, test=test) for run in runs], [str(run) for run in runs])

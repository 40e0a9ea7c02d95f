"""Comparison of two prediction sets: McNemar against the binomial sum computed by hand,
per-class deltas, pair changes, and refusals of mismatched inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmnist.data.classes import CLASS_NAMES
from fmnist.errors import RunError
from fmnist.evaluation.compare import Comparison, mcnemar_test
from fmnist.evaluation.predictions import Predictions


def one_hot_predictions(labels: np.ndarray, predicted: np.ndarray) -> Predictions:
    probabilities = np.full((len(labels), 10), 0.01, dtype=np.float32)
    probabilities[np.arange(len(labels)), predicted] = 0.91
    return Predictions(probabilities, labels, np.zeros((len(labels), 28, 28), dtype=np.uint8), list(CLASS_NAMES))


def test_mcnemar_exact_p_value_matches_the_binomial_sum():
    # 3 images only A gets right, 12 only B: p = 2 * P(X <= 3), X ~ Binomial(15, 1/2).
    correct_a = np.array([True] * 3 + [False] * 12 + [True] * 50 + [False] * 5)
    correct_b = np.array([False] * 3 + [True] * 12 + [True] * 50 + [False] * 5)
    result = mcnemar_test(correct_a, correct_b)
    expected = 2 * sum(math.comb(15, k) for k in range(4)) / 2**15
    assert (result.only_a_correct, result.only_b_correct) == (3, 12)
    assert result.p_value == pytest.approx(expected)


def test_mcnemar_without_discordant_pairs_is_one_and_symmetric():
    same = np.array([True, False, True])
    assert mcnemar_test(same, same).p_value == 1.0
    a, b = np.array([True, True, False, True]), np.array([False, False, True, True])
    assert mcnemar_test(a, b).p_value == pytest.approx(mcnemar_test(b, a).p_value)
    with pytest.raises(ValueError, match="one shape"):
        mcnemar_test(a, b[:3])


def test_comparison_views():
    shirt, pullover, coat = CLASS_NAMES.index("Shirt"), CLASS_NAMES.index("Pullover"), CLASS_NAMES.index("Coat")
    labels = np.array([shirt, shirt, pullover, coat, coat, 0])
    a = one_hot_predictions(labels, np.array([pullover, shirt, shirt, coat, shirt, 0]))
    b = one_hot_predictions(labels, np.array([shirt, pullover, pullover, shirt, shirt, 0]))
    comparison = Comparison(a, b)
    assert list(comparison.changed()) == [0, 1, 2, 3]
    pair = comparison.pair_change("Shirt", "Pullover")
    # A: images 0 and 2 are Shirt<->Pullover errors; B: image 1. B fixed 0 and 2, broke 1.
    assert (pair.errors_a, pair.errors_b, pair.fixed, pair.broken) == (2, 1, 2, 1)
    coat_shirt = comparison.pair_change("Coat", "Shirt")
    assert (coat_shirt.errors_a, coat_shirt.errors_b, coat_shirt.fixed, coat_shirt.broken) == (1, 2, 0, 1)
    difference = comparison.confusion_difference()
    assert difference[shirt, pullover] == 0 and difference[pullover, shirt] == -1 and difference[coat, shirt] == 1
    assert difference.sum() == 0
    deltas = {row["class"]: row for row in comparison.per_class_deltas()}
    assert deltas["Shirt"]["accuracy_a"] == 0.5 and deltas["Shirt"]["accuracy_b"] == 0.5
    assert deltas["Pullover"]["delta"] == 1.0 and deltas["Coat"]["delta"] == -0.5
    document = comparison.to_dict()
    assert document["changed_predictions"] == 4
    assert document["mcnemar"]["only_a_correct"] == 2 and document["mcnemar"]["only_b_correct"] == 2


def test_comparison_refuses_different_test_images():
    a = one_hot_predictions(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(RunError, match="not on the same test images"):
        Comparison(a, one_hot_predictions(np.array([1, 1]), np.array([0, 1])))
    with pytest.raises(RunError, match="not on the same test images"):
        Comparison(a, one_hot_predictions(np.array([0, 1, 2]), np.array([0, 1, 2])))


def test_holm_adjusted_p_values_by_hand_and_by_the_definition():
    from fmnist.evaluation.compare_many import holm_adjusted

    # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06.
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.2]) == [0.2] and holm_adjusted([]) == []
    assert holm_adjusted([0.5, 0.6, 0.7]) == [1.0, 1.0, 1.0]
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=10) ** 2
    # Holm's definition, written independently: adjusted p(i) = max_{j <= i} min(1, (m - j + 1) p(j)).
    ranked = sorted(range(len(p)), key=lambda index: p[index])
    expected = [0.0] * len(p)
    for position, index in enumerate(ranked):
        expected[index] = max(min(1.0, (len(p) - j) * p[ranked[j]]) for j in range(position + 1))
    assert holm_adjusted(p) == pytest.approx(expected)

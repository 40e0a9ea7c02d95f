"""stratified_split: per-class proportions, determinism by seed, disjointness, clean refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.data import stratified_split
from fmnist.errors import ConfigError


@pytest.fixture
def unbalanced_labels() -> np.ndarray:
    # Class c has 20 * (c + 1) images, shuffled: 1,100 in all.
    counts = 20 * np.arange(1, 11)
    return np.random.default_rng(0).permutation(np.repeat(np.arange(10), counts))


def test_every_class_is_split_in_the_same_proportion(unbalanced_labels):
    _train, val = stratified_split(unbalanced_labels, 0.2, seed=0)

    val_counts = np.bincount(unbalanced_labels[val], minlength=10)
    expected = 0.2 * np.bincount(unbalanced_labels, minlength=10)
    assert np.all(np.abs(val_counts - expected) <= 1), (val_counts, expected)
    assert len(val) == 220


def test_indices_are_disjoint_sorted_and_cover_everything(unbalanced_labels):
    train, val = stratified_split(unbalanced_labels, 0.1, seed=3)

    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(unbalanced_labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_the_seed_decides_the_split(unbalanced_labels):
    first = stratified_split(unbalanced_labels, 0.1, seed=42)
    again = stratified_split(unbalanced_labels, 0.1, seed=42)
    other = stratified_split(unbalanced_labels, 0.1, seed=43)

    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_zero_one_is_refused(unbalanced_labels, fraction):
    with pytest.raises(ConfigError, match=f"val_fraction must be between 0 and 1, got {fraction}"):
        stratified_split(unbalanced_labels, fraction, seed=0)


@pytest.mark.parametrize(
    ("labels", "fraction"),
    [
        (np.array([0, 0, 0, 1, 1, 1, 2]), 0.3),  # class 2 has a single image
        (np.repeat(np.arange(10), 2), 0.1),  # 2 validation images cannot hold 10 classes
    ],
    ids=["class-with-one-image", "fewer-val-images-than-classes"],
)
def test_impossible_split_is_a_clean_config_error(labels, fraction):
    with pytest.raises(ConfigError) as caught:
        stratified_split(labels, fraction, seed=0)

    message = str(caught.value)
    assert f"cannot split {len(labels)} images" in message
    assert "--subset" in message and "--val-fraction" in message

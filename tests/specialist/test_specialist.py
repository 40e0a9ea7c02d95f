"""Specialists: a second-stage model for the four tops, trained on the base run's own
training images of the group, consulted when the base's top-1 is a top, and evaluated
with and without it on the same test images."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from fmnist.data import load, stratified_split
from fmnist.evaluation.evaluate import evaluate_run
from fmnist.evaluation.specialist import (
    WEIGHT_GRID,
    choose_weight,
    combine_probabilities,
    predict_run_with_specialist,
)
from fmnist.models import load_model
from fmnist.training import resolve_config
from fmnist.training.data_prep import prepare_data

TOPS = [0, 2, 4, 6]  # T-shirt/top, Pullover, Coat, Shirt
SMALL = {"model": "seed_cnn", "model_args": {"width": 8, "hidden": 16}, "batch_size": 32, "epochs": 3}


def specialist_config(base: Path):
    return resolve_config("seed", overrides={**SMALL, "specialist": "tops", "base_run": str(base), "seed": 0, "threads": 1})


def test_specialist_data_is_the_bases_split_restricted_to_the_group(tiny_run: Path) -> None:
    data = tiny_run.parent / "data"
    prepared = prepare_data(specialist_config(tiny_run), data)
    labels = load("train", data).labels
    base_train, base_val = stratified_split(labels, 0.1, seed=0)  # tiny_run's split
    in_group = np.isin(labels, TOPS)
    assert len(prepared.train_labels) == in_group[base_train].sum()
    assert len(prepared.val_labels) == in_group[base_val].sum() > 0
    remapped = {0: 0, 2: 1, 4: 2, 6: 3}
    expected_val = [remapped[label] for label in labels[base_val] if label in remapped]
    assert prepared.val_labels.tolist() == expected_val
    assert set(prepared.train_labels.tolist()) == {0, 1, 2, 3}


def test_specialist_model_card(specialist_run: Path, tiny_run: Path) -> None:
    model = load_model(specialist_run)
    assert model.card.class_names == ["T-shirt/top", "Pullover", "Coat", "Shirt"]
    info = model.card.extra["specialist"]
    assert info["group"] == "tops" and info["classes"] == TOPS
    # Relative to the specialist's run folder: no path of the training machine in the card.
    assert info["base_run"] == os.path.relpath(tiny_run.resolve(), specialist_run.resolve())
    assert info["weight"] in WEIGHT_GRID and info["weight_fitted_on"] == "validation"
    import torch

    assert model.module(torch.rand(3, 1, 28, 28)).shape == (3, 4)


def test_combination_by_hand() -> None:
    base = np.array(
        [
            [0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0],  # top-1 T-shirt: routed
            [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0],  # top-1 Bag: not routed
        ]
    )
    specialist = np.array([[0.1, 0.1, 0.2, 0.6], [0.7, 0.1, 0.1, 0.1]])
    alone = combine_probabilities(base, specialist, TOPS, weight=1.0)
    np.testing.assert_allclose(alone[0], [0.08, 0, 0.08, 0, 0.16, 0, 0.48, 0, 0.2, 0])  # group mass 0.8
    np.testing.assert_allclose(alone[1], base[1])
    half = combine_probabilities(base, specialist, TOPS, weight=0.5)
    # within the group: 0.5 x (0.625, 0.375, 0, 0) + 0.5 x (0.1, 0.1, 0.2, 0.6), times 0.8
    np.testing.assert_allclose(half[0, TOPS], 0.8 * np.array([0.3625, 0.2375, 0.1, 0.3]))
    np.testing.assert_allclose(combine_probabilities(base, specialist, TOPS, weight=0.0), base)
    for combined in (alone, half):
        np.testing.assert_allclose(combined.sum(axis=1), 1.0)


def test_weight_is_chosen_by_validation_accuracy_with_ties_to_the_smaller_share() -> None:
    # Two routed images in the group (classes 0, 2 only). Image a (label 0) stays right while
    # w < 0.571; image b (label 2) becomes right once w > 0.27: both right for w in 0.3..0.5.
    base = np.zeros((2, 10))
    base[0, [0, 2]] = [0.9, 0.1]
    base[1, [0, 2]] = [0.65, 0.35]
    specialist = np.array([[0.2, 0.8, 0.0, 0.0], [0.1, 0.9, 0.0, 0.0]])
    assert choose_weight(base, specialist, np.array([0, 2]), TOPS) == 0.3
    # No share helps: the base alone (0.0), not the specialist.
    assert choose_weight(base, specialist, np.array([0, 0]), TOPS) == 0.0


def exact_mcnemar(fixed: int, broken: int) -> float:
    n = fixed + broken
    tail = sum(math.comb(n, i) for i in range(min(fixed, broken) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_combined_evaluation_reports_with_and_without(specialist_run: Path, tiny_run: Path) -> None:
    data = tiny_run.parent / "data"
    combined, base = predict_run_with_specialist(specialist_run, data)
    base_alone, base_metrics = evaluate_run(tiny_run, data, write=False)
    np.testing.assert_allclose(base.probabilities, base_alone.probabilities, atol=1e-6)
    np.testing.assert_allclose(combined.probabilities.sum(axis=1), 1.0, atol=1e-5)
    routed = np.isin(base.predicted, TOPS)
    np.testing.assert_allclose(combined.probabilities[~routed], base.probabilities[~routed])

    _, metrics = evaluate_run(specialist_run, data)
    effect = metrics["specialist"]
    assert metrics["test_accuracy"] == pytest.approx(combined.accuracy())
    assert effect["without_specialist"]["test_accuracy"] == pytest.approx(base_metrics["test_accuracy"])
    fixed, broken = effect["fixed"], effect["broken"]
    difference = effect["with_specialist"]["test_accuracy"] - effect["without_specialist"]["test_accuracy"]
    assert difference == pytest.approx((fixed - broken) / len(base.labels))
    assert effect["routed_images"] == routed.sum()
    assert effect["mcnemar_p"] == pytest.approx(exact_mcnemar(fixed, broken))
    matrix = np.array(base_metrics["confusion_matrix"])
    assert effect["without_specialist"]["pair_errors"]["Pullover <-> Shirt"] == matrix[2, 6] + matrix[6, 2]
    assert (specialist_run / "metrics.json").is_file()


def test_missing_base_run_is_reported(specialist_run: Path, tmp_path: Path) -> None:
    import shutil

    from fmnist.errors import RunError
    from fmnist.evaluation.specialist import load_base

    copy = tmp_path / "spec"
    shutil.copytree(specialist_run, copy)
    model = load_model(copy)
    model.card.extra["specialist"]["base_run"] = str(tmp_path / "gone")
    with pytest.raises(RunError, match="its base run .* is missing"):
        load_base(model)


def test_every_registered_model_takes_num_classes() -> None:
    import torch

    from fmnist.models import create_model, list_models

    for name in list_models():
        model = create_model(name, num_classes=4).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4), name


def test_a_specialist_split_unlike_its_base_is_warned_about(tiny_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from fmnist.training.specialist import warn_if_split_differs

    config = specialist_config(tiny_run)
    with caplog.at_level("WARNING", logger="fmnist.training.specialist"):
        warn_if_split_differs(config)
        assert not caplog.records
        warn_if_split_differs(dataclasses.replace(config, seed=1))
    assert "split_seed 0 (base) vs 1" in caplog.text

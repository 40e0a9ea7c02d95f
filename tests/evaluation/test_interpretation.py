"""Interpretation views, each checked against an independent computation on a real run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score

from fmnist.data import load
from fmnist.evaluation.interpretation import TOPS, Interpretation, final_linear
from fmnist.models import load_model


@pytest.fixture(scope="module")
def interpretation(tiny_run: Path) -> Interpretation:
    return Interpretation.from_run(tiny_run, tiny_run.parent / "data")


@pytest.mark.parametrize("tta_flip", [False, True])
def test_features_reproduce_the_logits_through_the_head(tiny_run: Path, tta_flip: bool):
    """The recorded features are what the head sees: head(features) == the predicted logits,
    also when the logits are averaged over an image and its mirror."""
    model = load_model(tiny_run)
    model = dataclasses.replace(model, card=dataclasses.replace(model.card, tta_flip=tta_flip))
    interpretation = Interpretation.from_model(model, load("test", tiny_run.parent / "data"))
    head = final_linear(model.module)
    with torch.no_grad():
        logits = head(torch.as_tensor(interpretation.features)).numpy()
    assert interpretation.features.shape == (100, head.in_features)
    np.testing.assert_allclose(logits, interpretation.predictions.logits, atol=1e-4)


def test_per_class_accuracy_is_recall_with_an_interval_around_it(interpretation: Interpretation):
    predictions = interpretation.predictions
    recalls = recall_score(predictions.labels, predictions.predicted, average=None, labels=list(range(10)))
    rows = interpretation.per_class_accuracy()
    assert [row.name for row in rows] == predictions.class_names
    for row, recall in zip(rows, recalls):
        assert row.accuracy == pytest.approx(recall)
        assert row.ci95[0] <= row.accuracy <= row.ci95[1]
        assert row.support == 10


def test_most_confused_and_tops_confusion_count_the_pairs(interpretation: Interpretation):
    predictions = interpretation.predictions
    names = predictions.class_names
    for true, predicted, count in interpretation.most_confused(1):
        t, p = names.index(true), names.index(predicted)
        assert count == int(((predictions.labels == t) & (predictions.predicted == p)).sum())
    classes, matrix = interpretation.tops_confusion()
    assert classes == list(TOPS)
    for row, true in enumerate(classes):
        for column, predicted in enumerate(classes):
            t, p = names.index(true), names.index(predicted)
            assert matrix[row, column] == int(((predictions.labels == t) & (predictions.predicted == p)).sum())


def test_top_losses_are_wrong_and_sorted(interpretation: Interpretation):
    predictions = interpretation.predictions
    top = interpretation.top_losses(5)
    assert not predictions.correct[top].any()
    assert list(predictions.losses[top]) == sorted(predictions.losses[top], reverse=True)


def test_the_nearest_training_image_of_a_training_image_is_itself(tmp_path: Path, tiny_run: Path, data_files):
    train = load("train", tiny_run.parent / "data")
    folder = tmp_path / "same"
    data_files.idx_split(folder, data_files.dataset(train.images, train.labels), split="train")
    data_files.idx_split(folder, data_files.dataset(train.images[:20], train.labels[:20]), split="test")
    interpretation = Interpretation.from_run(tiny_run, folder)
    for index in (0, 7, 19):
        nearest = interpretation.nearest_training_images(index, k=3)
        assert nearest[0].train_index == index
        assert nearest[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert nearest[0].label == train.labels[index]
        assert nearest[0].similarity >= nearest[1].similarity >= nearest[2].similarity
    with pytest.raises(IndexError):
        interpretation.nearest_training_images(20)


def test_a_neighbour_pool_limits_the_search(tiny_run: Path):
    interpretation = Interpretation.from_run(tiny_run, tiny_run.parent / "data", neighbour_pool=50)
    assert all(n.train_index < 50 for n in interpretation.nearest_training_images(0, k=10))


@pytest.mark.slow  # a forward pass over the 10,000 real test images, twice
def test_flipped_labels_are_found_as_label_issues(tmp_path: Path, real_run: Path, real_fmnist_dir: Path, data_files):
    """Relabel the 30 test images the model gets right most confidently: confident
    learning must flag nearly all of them (the test set then holds 30 known label errors)."""
    test = load("test", real_fmnist_dir)
    clean = Interpretation.from_run(real_run, real_fmnist_dir)
    correct = np.flatnonzero(clean.predictions.correct)
    flipped = correct[np.argsort(-clean.predictions.confidence[correct], kind="stable")[:30]]
    labels = test.labels.copy()
    labels[flipped] = (labels[flipped] + 5) % 10
    folder = tmp_path / "flipped"
    train = load("train", real_fmnist_dir)
    data_files.idx_split(folder, data_files.dataset(train.images[:100], train.labels[:100]), split="train")
    data_files.idx_split(folder, data_files.dataset(test.images, labels), split="test")
    issues = Interpretation.from_run(real_run, folder).label_issues()
    found = {issue.index for issue in issues}
    assert len(found & set(flipped.tolist())) >= 27
    # The untouched images flagged are the model's own confident errors: the same list as before.
    before = {issue.index for issue in clean.label_issues()}
    assert len((found - set(flipped.tolist())) - before) <= 0.1 * len(before) + 5
    first = issues[0]
    assert first.given == labels[first.index] and first.predicted != first.given


def test_to_dict_holds_every_view(interpretation: Interpretation):
    document = interpretation.to_dict(min_count=1, top_losses=3, label_issues=2, neighbours=2, neighbour_errors=2)
    assert document["test_images"] == 100
    assert len(document["top_losses"]) <= 3
    assert len(document["label_issues"]) <= 2
    assert document["label_issues_found"] >= len(document["label_issues"])
    assert len(document["nearest_training_images"]) == min(2, len(document["top_losses"]))
    assert document["tops_confusion"]["classes"] == list(TOPS)


def test_a_specialist_run_is_refused_with_a_pointer_to_compare(tiny_run: Path, tmp_path: Path):
    from fmnist.errors import RunError
    from fmnist.models import ModelCard, create_model, save_model

    # A four-class model whose card names tiny_run as its base, as `train --specialist` writes.
    card = ModelCard(model="seed_cnn", model_args={"width": 8, "hidden": 16, "num_classes": 4},
                     class_names=["T-shirt/top", "Pullover", "Coat", "Shirt"],
                     extra={"specialist": {"group": "tops", "classes": [0, 2, 4, 6], "base_run": str(tiny_run)}})
    save_model(tmp_path / "model.safetensors", create_model("seed_cnn", **card.model_args), card)
    with pytest.raises(RunError, match="fmnist compare"):
        Interpretation.from_run(tmp_path, tiny_run.parent / "data")

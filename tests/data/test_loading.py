"""load / load_split: the same content from every format, shapes and dtypes, digests."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.data import load, load_split
from fmnist.data.official import content_digest
from fmnist.errors import DataError

FORMATS = ["idx-gz", "idx-plain", "csv", "csv-gz", "csv-file"]


def write_format(folder, data_files, train, test, form: str):
    """Write both splits in ``form``; return what to pass as ``data``."""
    if form.startswith("idx"):
        data_files.idx_split(folder, train, split="train", gzipped=form == "idx-gz")
        data_files.idx_split(folder, test, split="test", gzipped=form == "idx-gz")
        return folder
    if form == "csv-file":  # one CSV named directly serves as every split
        return data_files.csv(folder / "mine.csv", train)
    suffix = ".gz" if form == "csv-gz" else ""
    data_files.csv(folder / f"fashion-mnist_train.csv{suffix}", train)
    data_files.csv(folder / f"fashion-mnist_test.csv{suffix}", test)
    return folder


@pytest.mark.parametrize("form", FORMATS)
def test_every_format_gives_the_same_arrays(tmp_path, data_files, tiny_train, tiny_test, form):
    data = write_format(tmp_path / form, data_files, tiny_train, tiny_test, form)

    images, labels = load_split("train", data)

    assert images.dtype == np.uint8 and images.shape == (50, 28, 28) and images.flags.c_contiguous
    assert labels.dtype == np.int64 and labels.shape == (50,)
    np.testing.assert_array_equal(images, tiny_train.images)
    np.testing.assert_array_equal(labels, tiny_train.labels)
    if form != "csv-file":
        test_images, test_labels = load_split("test", data)
        np.testing.assert_array_equal(test_images, tiny_test.images)
        np.testing.assert_array_equal(test_labels, tiny_test.labels)


def test_shuffled_csv_has_the_idx_content_digest(tmp_path, data_files, tiny_train, tiny_test):
    data_files.idx_split(tmp_path / "idx", tiny_train)
    data_files.idx_split(tmp_path / "idx", tiny_test, split="test")
    order = np.random.default_rng(7).permutation(50)
    shuffled = data_files.dataset(tiny_train.images[order], tiny_train.labels[order])
    data_files.csv_split(tmp_path / "csv", shuffled)

    from_idx = load("train", tmp_path / "idx")
    from_csv = load("train", tmp_path / "csv")

    assert not np.array_equal(from_idx.labels, from_csv.labels)  # really in another order
    assert from_idx.content_digest == from_csv.content_digest
    assert from_idx.content_digest == content_digest(tiny_train.images, tiny_train.labels)
    assert from_idx.files.format == "idx" and from_csv.files.format == "csv"


def test_content_digest_sees_every_change(tiny_train):
    digest = content_digest(tiny_train.images, tiny_train.labels)
    pixel = tiny_train.images.copy()
    pixel[3, 14, 14] ^= 1
    label = tiny_train.labels.copy()
    label[3] = (label[3] + 1) % 10

    assert content_digest(pixel, tiny_train.labels) != digest
    assert content_digest(tiny_train.images, label) != digest
    # A row is label + pixels together: swapping labels between rows is a change.
    swapped = tiny_train.labels.copy()
    first, second = np.flatnonzero(swapped != swapped[0])[0], 0
    swapped[[first, second]] = swapped[[second, first]]
    assert content_digest(tiny_train.images, swapped) != digest


def test_load_describes_the_split(tiny_idx_dir):
    loaded = load("train", tiny_idx_dir)

    assert loaded.name == "train"
    assert loaded.source.origin == "--data" and loaded.source.root == tiny_idx_dir
    assert loaded.official is False
    assert loaded.class_counts == [5] * 10
    assert [path.name for path in loaded.files.paths] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_idx_is_preferred_over_csv_in_one_folder(tmp_path, data_files, tiny_train, tiny_test):
    data_files.idx_split(tmp_path, tiny_train)
    data_files.csv_split(tmp_path, tiny_test)  # different data under the train CSV name

    loaded = load("train", tmp_path)

    assert loaded.files.format == "idx"
    np.testing.assert_array_equal(loaded.labels, tiny_train.labels)


def test_unknown_split_is_refused(tiny_idx_dir):
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load_split("validation", tiny_idx_dir)


def test_missing_split_names_the_folder_and_the_files(tmp_path, data_files, tiny_train):
    data_files.idx_split(tmp_path, tiny_train, split="train")

    with pytest.raises(DataError) as caught:
        load_split("test", tmp_path)

    message = str(caught.value)
    assert f"{tmp_path}: no test data here (found: train)" in message
    assert "t10k-images-idx3-ubyte" in message and "fashion-mnist_test.csv" in message

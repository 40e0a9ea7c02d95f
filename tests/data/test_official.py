"""The hard-coded checksums of the official release match the real files (where installed)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fmnist.data import load
from fmnist.data.idx import read_content
from fmnist.data.kaggle_csv import write_kaggle_csv
from fmnist.data.official import OFFICIAL_CONTENT_DIGESTS, OFFICIAL_FILES


@pytest.mark.parametrize("official", OFFICIAL_FILES, ids=lambda official: official.name)
def test_official_file_checksums_match_the_real_files(real_fmnist_dir, official):
    content = read_content(real_fmnist_dir / official.name)

    assert len(content) == official.content_size
    assert hashlib.sha256(content).hexdigest() == official.content_sha256


@pytest.mark.parametrize(("split", "count"), [("train", 60_000), ("test", 10_000)])
def test_official_content_digests_match_the_real_data(real_fmnist_dir, monkeypatch, split, count):
    monkeypatch.setenv("FMNIST_SYSTEM_DATA", str(real_fmnist_dir))

    loaded = load(split)

    assert loaded.source.origin == "system"
    assert loaded.content_digest == OFFICIAL_CONTENT_DIGESTS[split]
    assert loaded.official
    assert loaded.images.shape == (count, 28, 28)
    assert loaded.class_counts == [count // 10] * 10


def test_official_files_describe_both_splits():
    assert {(official.split, official.kind) for official in OFFICIAL_FILES} == {
        (split, kind) for split in ("train", "test") for kind in ("images", "labels")
    }
    assert set(OFFICIAL_CONTENT_DIGESTS) == {"train", "test"}
    for official in OFFICIAL_FILES:
        rows = 60_000 if official.split == "train" else 10_000
        header = 16 if official.kind == "images" else 8
        assert official.content_size == header + rows * (784 if official.kind == "images" else 1)


def test_real_test_split_as_shuffled_csv_is_recognised_as_official(real_fmnist_dir, tmp_path):
    # The Kaggle CSVs hold the official rows in another order: they must count as official.
    real = load("test", real_fmnist_dir)
    order = np.random.default_rng(0).permutation(len(real.labels))
    write_kaggle_csv(tmp_path / "fashion-mnist_test.csv", real.images[order], real.labels[order])

    from_csv = load("test", tmp_path)

    assert from_csv.files.format == "csv"
    assert from_csv.official and from_csv.content_digest == OFFICIAL_CONTENT_DIGESTS["test"]
    np.testing.assert_array_equal(from_csv.labels, real.labels[order])

"""The search order: --data, $FMNIST_DATA, the cache, the system copy, then a download."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from fmnist.data import cache_data_dir, load, locate_data
from fmnist.errors import DataError


@pytest.fixture
def four_places(tmp_path, data_files, monkeypatch):
    """Different tiny data in each place of the search order; returns {origin: folder}."""
    places = {
        "--data": tmp_path / "named",
        "$FMNIST_DATA": tmp_path / "env",
        "cache": cache_data_dir(),
        "system": tmp_path / "system",
    }
    for seed, folder in enumerate(places.values()):
        data_files.idx_split(folder, data_files.tiny(20, seed=seed), split="train")
        data_files.idx_split(folder, data_files.tiny(10, seed=seed), split="test")
    monkeypatch.setenv("FMNIST_DATA", str(places["$FMNIST_DATA"]))
    monkeypatch.setenv("FMNIST_SYSTEM_DATA", str(places["system"]))
    return places


def test_search_order(four_places, mirror, monkeypatch):
    found = locate_data(four_places["--data"], download=False)
    assert (found.origin, found.root) == ("--data", four_places["--data"])

    found = locate_data(download=False)
    assert (found.origin, found.root) == ("$FMNIST_DATA", four_places["$FMNIST_DATA"])

    monkeypatch.delenv("FMNIST_DATA")
    found = locate_data(download=False)
    assert (found.origin, found.root) == ("cache", four_places["cache"])

    for path in four_places["cache"].iterdir():
        path.unlink()
    found = locate_data(download=False)
    assert (found.origin, found.root) == ("system", four_places["system"])

    monkeypatch.setenv("FMNIST_SYSTEM_DATA", str(four_places["system"] / "nowhere"))
    with pytest.raises(DataError, match="no Fashion-MNIST data found.*downloading was not allowed"):
        locate_data(download=False)
    assert mirror.requests == []  # nothing was downloaded while a local copy existed


def test_empty_fmnist_data_counts_as_unset(four_places, monkeypatch):
    monkeypatch.setenv("FMNIST_DATA", "")

    assert locate_data(download=False).origin == "cache"


def test_cache_and_system_need_both_splits(tmp_path, data_files, tiny_train, monkeypatch):
    data_files.idx_split(cache_data_dir(), tiny_train, split="train")
    incomplete, complete = tmp_path / "incomplete", tmp_path / "complete"
    data_files.idx_split(incomplete, tiny_train, split="train")
    data_files.idx_split(complete, tiny_train, split="train")
    data_files.idx_split(complete, tiny_train, split="test")
    monkeypatch.setenv("FMNIST_SYSTEM_DATA", os.pathsep.join([str(incomplete), str(complete)]))

    found = locate_data(download=False)

    assert (found.origin, found.root) == ("system", complete)


def test_unusable_named_source_is_an_error_not_skipped(four_places, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()

    with pytest.raises(DataError, match="nothing usable in this folder"):
        locate_data(tmp_path / "empty")
    monkeypatch.setenv("FMNIST_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"missing: no such file or folder \(check the path given by \$FMNIST_DATA\)"):
        locate_data()


def test_system_copy_that_is_not_official_loads_with_a_warning(four_places, monkeypatch, caplog):
    monkeypatch.delenv("FMNIST_DATA")
    for path in four_places["cache"].iterdir():
        path.unlink()

    with caplog.at_level(logging.WARNING, logger="fmnist.data.loading"):
        loaded = load("test")

    assert loaded.source.origin == "system" and not loaded.official
    assert "differs from the official Fashion-MNIST content" in caplog.text


def test_cache_copy_that_is_not_official_is_reported_damaged(four_places, monkeypatch):
    # Only verified files are written to the cache, so other content there means damage.
    monkeypatch.delenv("FMNIST_DATA")

    with pytest.raises(DataError, match="cached test data is damaged.*fmnist data fetch") as caught:
        load("test")
    assert str(four_places["cache"]) in str(caught.value)


def test_named_data_wins_even_over_a_complete_cache(four_places, data_files):
    loaded = load("train", four_places["--data"])

    np.testing.assert_array_equal(loaded.labels, data_files.tiny(20, seed=0).labels)

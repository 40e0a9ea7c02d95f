"""The .npy cache of parsed splits: reused, invalidated by any change, never fatal."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from fmnist.data import load, loading


def entries(cache_root):
    arrays = cache_root / "arrays"
    return sorted(path for path in arrays.iterdir() if not path.name.startswith(".")) if arrays.is_dir() else []


def forbid_parsing(monkeypatch):
    def fail(files):
        raise AssertionError(f"parsed {files.paths} although a cache entry should have served it")

    monkeypatch.setattr(loading, "_parse", fail)


@pytest.mark.parametrize("fixture", ["tiny_idx_dir", "tiny_csv_dir"])
def test_second_load_reads_the_npy_cache(request, fixture, isolated_fmnist_cache, monkeypatch, tiny_train):
    folder = request.getfixturevalue(fixture)
    first = load("train", folder)
    [entry] = entries(isolated_fmnist_cache)
    assert sorted(path.name for path in entry.iterdir()) == ["images.npy", "info.json", "labels.npy"]

    forbid_parsing(monkeypatch)
    second = load("train", folder)

    np.testing.assert_array_equal(second.images, tiny_train.images)
    np.testing.assert_array_equal(second.labels, tiny_train.labels)
    assert second.images.dtype == np.uint8 and second.labels.dtype == np.int64
    assert second.content_digest == first.content_digest
    assert second.official is first.official is False


def test_a_rewritten_csv_is_parsed_again(tiny_csv_dir, data_files, isolated_fmnist_cache):
    path = tiny_csv_dir / "fashion-mnist_train.csv"
    load("train", tiny_csv_dir)
    changed = data_files.tiny(30, seed=5)
    data_files.csv(path, changed)

    reloaded = load("train", tiny_csv_dir)

    np.testing.assert_array_equal(reloaded.labels, changed.labels)
    assert len(entries(isolated_fmnist_cache)) == 2


def test_same_size_change_is_seen_through_the_modification_time(tiny_idx_dir, tiny_train, isolated_fmnist_cache):
    # The key is (path, size, mtime): an edit that keeps the size must still be seen.
    path = tiny_idx_dir / "train-labels-idx1-ubyte.gz"
    load("train", tiny_idx_dir)
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    before = path.stat()
    path.write_bytes(gzip.compress(bytes(content), mtime=0))
    # File systems stamp times coarsely (a few ms); model an edit made a second later.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))

    reloaded = load("train", tiny_idx_dir)

    assert reloaded.labels[-1] == (tiny_train.labels[-1] + 1) % 10
    assert len(entries(isolated_fmnist_cache)) == 2


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage-json"])
def test_a_damaged_entry_is_ignored(tiny_idx_dir, tiny_train, isolated_fmnist_cache, damage):
    # Regression ("empty"): np.load raises EOFError on an empty .npy, which crashed the load.
    load("train", tiny_idx_dir)
    [entry] = entries(isolated_fmnist_cache)
    if damage == "empty":
        (entry / "images.npy").write_bytes(b"")
    elif damage == "truncated":
        (entry / "images.npy").write_bytes((entry / "images.npy").read_bytes()[:-100])
    else:
        (entry / "info.json").write_text("{not json")

    reloaded = load("train", tiny_idx_dir)

    np.testing.assert_array_equal(reloaded.images, tiny_train.images)


def test_an_unwritable_cache_never_fails_the_load(tiny_idx_dir, tiny_train, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be created under a file")
    monkeypatch.setenv("FMNIST_CACHE", str(blocker))

    loaded = load("train", tiny_idx_dir)

    np.testing.assert_array_equal(loaded.images, tiny_train.images)


def test_no_staging_folders_are_left_behind(tiny_idx_dir, isolated_fmnist_cache):
    load("train", tiny_idx_dir)
    load("test", tiny_idx_dir)

    names = [path.name for path in (isolated_fmnist_cache / "arrays").iterdir()]
    assert len(names) == 2 and not any(name.startswith(".staging") for name in names)

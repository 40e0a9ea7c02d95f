"""The .npy cache of parsed splits: reused, invalidated by any change, never fatal."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil

import numpy as np
import pytest
from limited_process import run_limited

from fmnist.data import cache, load, loading


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


# -- entries that no longer match their files ----------------------------------------------
def _edit_in_place(path, offset, value):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes([value]))


def _restore_times(path, before):
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("how", ["in-place-then-utime", "copy2-like-cp-p", "same-size-rename"])
def test_an_edit_that_keeps_size_and_timestamp_is_seen(tmp_path, data_files, tiny_train, how):
    # Regression: the key was (path, size, mtime), so `cp -p`, `rsync -t`, `tar x` or
    # os.utime after an edit served the old arrays (and their "official" verdict).
    folder = tmp_path / "plain"
    data_files.idx_split(folder, tiny_train, gzipped=False)
    labels_path = folder / "train-labels-idx1-ubyte"
    load("train", folder)
    before = labels_path.stat()
    changed = tiny_train.labels.copy()
    changed[-1] = (changed[-1] + 1) % 10
    if how == "in-place-then-utime":
        _edit_in_place(labels_path, before.st_size - 1, int(changed[-1]))
    else:
        other = data_files.idx(tmp_path / "other-labels", changed)
        if how == "copy2-like-cp-p":
            shutil.copy2(other, labels_path)  # rewrites the same inode, copies the old mtime below
        else:
            os.replace(other, labels_path)  # a new inode under the old name
    _restore_times(labels_path, before)
    assert labels_path.stat().st_size == before.st_size and labels_path.stat().st_mtime_ns == before.st_mtime_ns

    reloaded = load("train", folder)

    np.testing.assert_array_equal(reloaded.labels, changed)


@pytest.mark.parametrize("where", ["images", "labels"])
def test_a_corrupted_entry_is_discarded_and_parsed_again(tiny_idx_dir, tiny_train, isolated_fmnist_cache, caplog, where):
    # Regression: a flipped byte in a cached .npy was served as the data.
    load("train", tiny_idx_dir)
    [entry] = entries(isolated_fmnist_cache)
    target = entry / f"{where}.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0x01
    target.write_bytes(bytes(raw))

    with caplog.at_level(logging.INFO, logger="fmnist.data.cache"):
        reloaded = load("train", tiny_idx_dir)

    np.testing.assert_array_equal(reloaded.images, tiny_train.images)
    np.testing.assert_array_equal(reloaded.labels, tiny_train.labels)
    assert any("damaged" in record.getMessage() for record in caplog.records)
    forbid = load("train", tiny_idx_dir)  # the entry was written again, intact
    np.testing.assert_array_equal(forbid.labels, tiny_train.labels)


def test_a_forged_official_verdict_is_not_believed(tiny_idx_dir, isolated_fmnist_cache):
    load("train", tiny_idx_dir)
    [entry] = entries(isolated_fmnist_cache)
    info = json.loads((entry / "info.json").read_text())
    (entry / "info.json").write_text(json.dumps({**info, "official": True}))

    assert load("train", tiny_idx_dir).official is False


def test_an_entry_claiming_a_huge_shape_costs_nothing(tiny_idx_dir, tiny_train, isolated_fmnist_cache):
    # A damaged .npy header claiming 10^12 images (784 TB) is discarded, not allocated.
    load("train", tiny_idx_dir)
    [entry] = entries(isolated_fmnist_cache)
    with open(entry / "images.npy", "wb") as out:
        header = {"descr": "|u1", "fortran_order": False, "shape": (10**12, 28, 28)}
        np.lib.format.write_array_header_1_0(out, header)
        out.write(tiny_train.images.tobytes())

    np.testing.assert_array_equal(load("train", tiny_idx_dir).images, tiny_train.images)


def test_a_change_within_one_timestamp_tick_is_caught_by_the_file_digest(tmp_path, data_files, tiny_train, monkeypatch):
    # On a file system with coarse timestamps, an edit right after caching can leave every
    # stat field as it was. Modelled here with a key of what such an edit cannot change.
    monkeypatch.setattr(
        cache, "_identity", lambda files: [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files.paths]
    )
    folder = tmp_path / "plain"
    data_files.idx_split(folder, tiny_train, gzipped=False)
    labels_path = folder / "train-labels-idx1-ubyte"
    load("train", folder)  # just written: the entry is racy and keeps the files' digests
    before = labels_path.stat()
    _edit_in_place(labels_path, before.st_size - 1, (int(tiny_train.labels[-1]) + 1) % 10)
    _restore_times(labels_path, before)

    assert load("train", folder).labels[-1] == (tiny_train.labels[-1] + 1) % 10


def test_a_racy_entry_is_trusted_by_its_key_once_old(tiny_idx_dir, isolated_fmnist_cache, monkeypatch):
    load("train", tiny_idx_dir)
    [entry] = entries(isolated_fmnist_cache)
    assert json.loads((entry / "info.json").read_text())["file_sha256"] is not None
    monkeypatch.setattr(cache, "RACY_WINDOW_NS", 0)  # as if the files were written long ago

    load("train", tiny_idx_dir)

    assert json.loads((entry / "info.json").read_text())["file_sha256"] is None


@pytest.mark.parametrize("name", ["info.json", "images.npy"])
def test_a_fifo_in_an_entry_is_discarded_without_blocking(tiny_idx_dir, tiny_train, isolated_fmnist_cache, name):
    load("train", tiny_idx_dir)
    [entry] = entries(isolated_fmnist_cache)
    (entry / name).unlink()
    os.mkfifo(entry / name)  # would block open() until a writer came
    code = "import sys; from fmnist.data import load; print(load('train', sys.argv[1]).labels.tolist())"

    # In a child with a timeout (the same $FMNIST_CACHE): a regression fails, never hangs.
    done = run_limited(["-c", code, str(tiny_idx_dir)], cwd=tiny_idx_dir, timeout=30)

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == tiny_train.labels.tolist()

"""The IDX reader: gzipped and plain files, both name spellings, and what it refuses."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from fmnist.data.idx import read_content, read_idx, read_idx_pair
from fmnist.data.locate import scan_folder
from fmnist.errors import DataError


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "plain"])
def test_read_idx_pair_returns_the_written_arrays(tmp_path, data_files, tiny_train, gzipped):
    images_path, labels_path = data_files.idx_split(tmp_path, tiny_train, gzipped=gzipped)

    images, labels = read_idx_pair(images_path, labels_path)

    assert images.array.dtype == np.uint8 and images.array.shape == (50, 28, 28)
    np.testing.assert_array_equal(images.array, tiny_train.images)
    np.testing.assert_array_equal(labels.array, tiny_train.labels)
    # The digest is of the decompressed content, so it does not depend on compression.
    assert images.sha256 == hashlib.sha256(data_files.idx_bytes(tiny_train.images)).hexdigest()


def test_gzip_level_does_not_change_the_content(tmp_path, data_files, tiny_train):
    content = data_files.idx_bytes(tiny_train.images)
    fast, best = tmp_path / "fast.gz", tmp_path / "best.gz"
    fast.write_bytes(gzip.compress(content, compresslevel=1))
    best.write_bytes(gzip.compress(content, compresslevel=9))

    assert fast.read_bytes() != best.read_bytes()
    assert read_content(fast) == read_content(best) == content


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "plain"])
def test_mirror_spelling_with_a_dot_is_found(tmp_path, data_files, tiny_train, gzipped):
    suffix = ".gz" if gzipped else ""
    data_files.idx(tmp_path / f"train-images.idx3-ubyte{suffix}", tiny_train.images)
    data_files.idx(tmp_path / f"train-labels.idx1-ubyte{suffix}", tiny_train.labels)

    files = scan_folder(tmp_path)["train"]

    assert files.format == "idx"
    images, _labels = read_idx_pair(*files.paths)
    np.testing.assert_array_equal(images.array, tiny_train.images)


def test_labels_file_read_as_images_is_refused(tmp_path, data_files, tiny_train):
    path = data_files.idx(tmp_path / "labels-idx1-ubyte", tiny_train.labels)

    with pytest.raises(DataError, match="wrong IDX magic number 0x00000801.*expected 0x00000803"):
        read_idx(path, kind="images")


def test_file_without_images_is_refused(tmp_path, data_files):
    path = data_files.idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))

    with pytest.raises(DataError, match="holds no images"):
        read_idx(path, kind="images")


def test_truncated_header_is_refused(tmp_path, data_files, tiny_train):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data_files.idx_bytes(tiny_train.images)[:10])

    with pytest.raises(DataError, match="IDX header is truncated"):
        read_idx(path, kind="images")


def test_bytes_after_the_data_are_refused(tmp_path, data_files, tiny_train):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data_files.idx_bytes(tiny_train.images) + b"\x00" * 7)

    with pytest.raises(DataError, match="7 unexpected bytes after the data"):
        read_idx(path, kind="images")


def test_corrupt_gzip_is_refused(tmp_path, data_files, tiny_train):
    packed = bytearray(gzip.compress(data_files.idx_bytes(tiny_train.labels)))
    packed[-6] ^= 0xFF  # inside the CRC-32 trailer
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(packed))

    with pytest.raises(DataError, match="corrupt gzip data") as caught:
        read_idx(path, kind="labels")
    assert str(path) in str(caught.value)

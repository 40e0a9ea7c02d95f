"""The Kaggle CSV reader and writer."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fmnist.data.kaggle_csv import read_kaggle_csv, write_kaggle_csv
from fmnist.errors import DataError


def test_read_returns_the_written_arrays(tmp_path, data_files, tiny_train):
    path = data_files.csv(tmp_path / "train.csv", tiny_train)

    images, labels = read_kaggle_csv(path)

    assert images.dtype == np.uint8 and images.shape == (50, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (50,)
    np.testing.assert_array_equal(images, tiny_train.images)
    np.testing.assert_array_equal(labels, tiny_train.labels)


def test_file_without_header_is_read(tmp_path, data_files, tiny_train):
    path = data_files.csv(tmp_path / "train.csv", tiny_train, header=False)

    images, labels = read_kaggle_csv(path)

    np.testing.assert_array_equal(images, tiny_train.images)
    np.testing.assert_array_equal(labels, tiny_train.labels)


def test_pixels_only_file_needs_require_labels_false(tmp_path, tiny_train):
    path = tmp_path / "pixels.csv"
    pixels = tiny_train.images.reshape(50, -1)
    header = ",".join(f"pixel{i}" for i in range(1, 785))
    path.write_text(header + "\n" + "\n".join(",".join(map(str, row)) for row in pixels.tolist()) + "\n")

    with pytest.raises(DataError, match="no label column"):
        read_kaggle_csv(path)
    images, labels = read_kaggle_csv(path, require_labels=False)
    assert labels is None
    np.testing.assert_array_equal(images, tiny_train.images)


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
@pytest.mark.parametrize("variant", ["crlf", "utf8-bom"])
def test_files_saved_on_windows_are_read(tmp_path, data_files, tiny_train, variant, header):
    # Regression (utf8-bom): Excel's "CSV UTF-8" starts with a byte-order mark, and the
    # header sniffer refused the file ("unexpected first line '\ufefflabel,...'").
    text = data_files.csv_text(tiny_train, header=header)
    content = text.replace("\n", "\r\n").encode() if variant == "crlf" else b"\xef\xbb\xbf" + text.encode()
    path = tmp_path / "train.csv"
    path.write_bytes(content)

    images, labels = read_kaggle_csv(path)

    np.testing.assert_array_equal(images, tiny_train.images)
    np.testing.assert_array_equal(labels, tiny_train.labels)


def test_gzipped_csv_is_read(tmp_path, data_files, tiny_train):
    # Regression: locate accepts fashion-mnist_train.csv.gz, but the header sniffer read
    # the compressed bytes and refused the file as "binary content".
    path = data_files.csv(tmp_path / "fashion-mnist_train.csv.gz", tiny_train)

    images, labels = read_kaggle_csv(path)

    np.testing.assert_array_equal(images, tiny_train.images)
    np.testing.assert_array_equal(labels, tiny_train.labels)


@pytest.mark.parametrize("kept", [100, 30_000], ids=["in-header", "in-rows"])
def test_truncated_gzipped_csv_is_refused(tmp_path, data_files, tiny_train, kept):
    # Regression: a .csv.gz cut after the first 64 KiB of text crashed with pyarrow's OSError.
    packed = gzip.compress(data_files.csv_text(tiny_train).encode())
    path = tmp_path / "fashion-mnist_train.csv.gz"
    path.write_bytes(packed[:kept])

    with pytest.raises(DataError) as caught:
        read_kaggle_csv(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "runcated" in message.removeprefix(f"{path}: ")  # the test's tmp path says "truncated" too


def test_write_then_read_round_trips(tmp_path, tiny_train):
    path = tmp_path / "out.csv"

    write_kaggle_csv(path, tiny_train.images, tiny_train.labels)

    header = path.read_text().splitlines()[0]
    assert header == "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    images, labels = read_kaggle_csv(path)
    np.testing.assert_array_equal(images, tiny_train.images)
    np.testing.assert_array_equal(labels, tiny_train.labels)


def test_extreme_pixel_values_are_kept(tmp_path, data_files, tiny_train):
    tiny_train.images[0, 0, 0], tiny_train.images[1, 27, 27] = 0, 255
    tiny_train.labels[:2] = [0, 9]
    path = data_files.csv(tmp_path / "train.csv", tiny_train)

    images, labels = read_kaggle_csv(path)

    assert images[0, 0, 0] == 0 and images[1, 27, 27] == 255
    assert labels[:2].tolist() == [0, 9]


def test_wrong_header_is_refused(tmp_path, data_files, tiny_train):
    path = tmp_path / "train.csv"
    path.write_text(data_files.csv_text(tiny_train).replace("label,", "class,", 1))

    with pytest.raises(DataError, match="unexpected first line 'class,pixel1"):
        read_kaggle_csv(path)

"""`fmnist data export-csv DIR`: export, read back, compare with the originals."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.data import load, locate_data
from fmnist.data.export_csv import export_csv
from fmnist.data.kaggle_csv import read_kaggle_csv


@pytest.mark.parametrize("fixture", ["tiny_idx_dir", "tiny_csv_dir"])
def test_cli_export_round_trips(request, fixture, tmp_path, run_fmnist, tiny_train, tiny_test):
    source = request.getfixturevalue(fixture)
    out = tmp_path / "exported"

    result = run_fmnist("data", "export-csv", str(out), "--data", str(source))

    assert result.returncode == 0, result.stderr
    train_csv, test_csv = out / "fashion-mnist_train.csv", out / "fashion-mnist_test.csv"
    assert result.stdout.splitlines() == [f"wrote {train_csv}", f"wrote {test_csv}"]
    for path, original in [(train_csv, tiny_train), (test_csv, tiny_test)]:
        images, labels = read_kaggle_csv(path)
        np.testing.assert_array_equal(images, original.images)  # same rows, same order
        np.testing.assert_array_equal(labels, original.labels)
    assert sorted(p.name for p in out.iterdir()) == ["fashion-mnist_test.csv", "fashion-mnist_train.csv"]


def test_exported_folder_is_a_data_source_with_the_same_content(tiny_idx_dir, tmp_path):
    out = tmp_path / "exported"

    export_csv(locate_data(tiny_idx_dir), out)

    for split in ("train", "test"):
        original, exported = load(split, tiny_idx_dir), load(split, out)
        assert exported.files.format == "csv"
        assert exported.content_digest == original.content_digest
        np.testing.assert_array_equal(exported.images, original.images)


def test_export_replaces_an_older_export(tiny_idx_dir, tmp_path, data_files):
    out = tmp_path / "exported"
    data_files.csv_split(out, data_files.tiny(5, seed=9))

    export_csv(locate_data(tiny_idx_dir), out)

    assert len(load("train", out).labels) == 50
    assert sorted(p.name for p in out.iterdir()) == ["fashion-mnist_test.csv", "fashion-mnist_train.csv"]


def test_exporting_onto_the_csvs_it_reads_is_refused(tmp_path, data_files, run_fmnist):
    folder = tmp_path / "kaggle"
    data_files.csv_split(folder, data_files.tiny(30, seed=0), split="train")
    data_files.csv_split(folder, data_files.tiny(20, seed=1), split="test")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    run_fmnist("data", "export-csv", str(folder), "--data", str(folder)).error_line("would replace", "choose another folder")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

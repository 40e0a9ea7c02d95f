"""describe_data and `fmnist data info` (text and JSON)."""

from __future__ import annotations

import json

from fmnist.data.classes import CLASS_NAMES
from fmnist.data.info import describe_data
from fmnist.data.official import content_digest


def test_describe_data_reports_format_counts_and_digest(tiny_csv_dir, tiny_train):
    description = describe_data(tiny_csv_dir, download=False)

    assert description["root"] == str(tiny_csv_dir) and description["origin"] == "--data"
    train = description["splits"]["train"]
    assert train["format"] == "csv"
    assert train["files"] == [str(tiny_csv_dir / "fashion-mnist_train.csv")]
    assert train["images"] == 50
    assert train["class_counts"] == dict.fromkeys(CLASS_NAMES, 5)
    assert train["content_digest"] == content_digest(tiny_train.images, tiny_train.labels)
    assert train["official"] is False
    assert description["splits"]["test"]["images"] == 20


def test_a_folder_with_one_split_reports_the_other_missing(tmp_path, data_files, tiny_train):
    data_files.idx_split(tmp_path, tiny_train, split="train")

    description = describe_data(tmp_path, download=False)

    assert description["splits"]["test"] is None
    assert description["splits"]["train"]["format"] == "idx"


def test_cli_text(tiny_idx_dir, run_fmnist):
    result = run_fmnist("data", "info", "--data", str(tiny_idx_dir))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"source   {tiny_idx_dir}  (named with --data)"
    assert lines[1].startswith("train    50 images, IDX: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz")
    assert "differs from the official release" in lines[2]
    assert lines[3].strip().startswith("classes: T-shirt/top 5, Trouser 5")
    assert lines[4].startswith("test     20 images, IDX")


def test_cli_json(tiny_csv_dir, run_fmnist):
    result = run_fmnist("data", "info", "--data", str(tiny_csv_dir), "--format", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == describe_data(tiny_csv_dir, download=False)


def test_cli_reports_a_missing_split(tmp_path, data_files, tiny_train, run_fmnist):
    data_files.csv_split(tmp_path / "only-train", tiny_train)

    result = run_fmnist("data", "info", "--data", str(tmp_path / "only-train"))

    assert result.returncode == 0, result.stderr
    assert "test     not present" in result.stdout.splitlines()

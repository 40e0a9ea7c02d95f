"""Every kind of bad data is refused with a DataError naming the file, and by the CLI cleanly.

Each case writes a folder whose train split is bad (the test split is good) and returns
what to pass as --data, the file the message must name and a fragment it must contain.
The same cases run through ``load_split`` and through ``python -m fmnist data info``.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fmnist.data import load_split
from fmnist.errors import DataError

Case = Callable[[Path, object], tuple[Path, Path, str]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(build: Case) -> Case:
        CASES[name] = build
        return build

    return register


def idx_folder(folder: Path, files) -> tuple[Path, Path]:
    """Good gzipped IDX files for both splits; returns the train (images, labels) paths."""
    files.idx_split(folder, files.tiny(10, seed=1), split="test")
    return files.idx_split(folder, files.tiny(50, seed=0), split="train")


def csv_folder(folder: Path, files, edit: Callable[[list[str]], list[str]]) -> Path:
    """Good CSVs for both splits, the train one passed through ``edit`` (a list of lines)."""
    files.csv_split(folder, files.tiny(10, seed=1), split="test")
    path = folder / "fashion-mnist_train.csv"
    lines = edit(files.csv_text(files.tiny(50, seed=0)).splitlines())
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def set_cell(line: int, column: int, value: str) -> Callable[[list[str]], list[str]]:
    """An edit that puts ``value`` at file line ``line`` (1 = header), cell ``column`` (0 = label)."""

    def edit(lines: list[str]) -> list[str]:
        cells = lines[line - 1].split(",")
        cells[column] = value
        lines[line - 1] = ",".join(cells)
        return lines

    return edit


# -- IDX -----------------------------------------------------------------------------------
@case("idx-wrong-magic")
def _(folder, files):
    images, _ = idx_folder(folder, files)
    array = files.tiny(50).images
    images.write_bytes(gzip.compress(files.idx_bytes(array, magic=b"\x00\x00\x0d\x03")))
    return folder, images, "wrong IDX magic number 0x00000d03"


@case("idx-32x32-images")
def _(folder, files):
    images, _ = idx_folder(folder, files)
    files.idx(images, np.zeros((50, 32, 32), np.uint8))
    return folder, images, "images are 32x32 pixels, expected 28x28"


@case("idx-truncated")
def _(folder, files):
    folder.mkdir()
    files.idx_split(folder, files.tiny(10, seed=1), split="test")
    images, _ = files.idx_split(folder, files.tiny(50), gzipped=False)
    images.write_bytes(images.read_bytes()[:-1000])
    return folder, images, "truncated: the header promises 39,200 bytes"


@case("idx-truncated-gzip")
def _(folder, files):
    images, _ = idx_folder(folder, files)
    images.write_bytes(images.read_bytes()[:5000])
    return folder, images, "the gzip stream is truncated"


@case("idx-not-gzip-under-gz-name")
def _(folder, files):
    images, _ = idx_folder(folder, files)
    images.write_bytes(files.idx_bytes(files.tiny(50).images))
    return folder, images, "the name ends in .gz but the content is not gzip data"


@case("idx-count-mismatch")
def _(folder, files):
    images, labels = idx_folder(folder, files)
    files.idx(labels, files.tiny(50).labels[:49])
    return folder, images, f"holds 50 images but {labels} holds 49 labels"


@case("idx-label-10")
def _(folder, files):
    _, labels = idx_folder(folder, files)
    values = files.tiny(50).labels
    values[7] = 10
    files.idx(labels, values)
    return folder, labels, "label 10 at index 7 is outside 0-9"


@case("idx-label-255")
def _(folder, files):
    _, labels = idx_folder(folder, files)
    values = files.tiny(50).labels
    values[0] = 255
    files.idx(labels, values)
    return folder, labels, "label 255 at index 0 is outside 0-9"


@case("idx-empty-file")
def _(folder, files):
    folder.mkdir()
    files.idx_split(folder, files.tiny(10, seed=1), split="test")
    images, _ = files.idx_split(folder, files.tiny(50), gzipped=False)
    images.write_bytes(b"")
    return folder, images, "only 0 bytes, too short to be an IDX file"


@case("idx-empty-gz-file")
def _(folder, files):
    images, _ = idx_folder(folder, files)
    images.write_bytes(b"")
    return folder, images, "not gzip data"


@case("idx-file-named-directly")
def _(folder, files):
    images, _ = idx_folder(folder, files)
    return images, images, "a single file must be a Kaggle-layout CSV"


# -- CSV -----------------------------------------------------------------------------------
@case("csv-label-10")
def _(folder, files):
    return folder, csv_folder(folder, files, set_cell(4, 0, "10")), "line 4, column label: 10 is outside 0-9"


@case("csv-label-minus-1")
def _(folder, files):
    return folder, csv_folder(folder, files, set_cell(2, 0, "-1")), "line 2, column label: -1 is outside 0-9"


@case("csv-too-few-columns")
def _(folder, files):
    def edit(lines):
        lines[3] = ",".join(lines[3].split(",")[:10])
        return lines

    return folder, csv_folder(folder, files, edit), "line 4 has 10 cells, expected 785"


@case("csv-too-many-columns")
def _(folder, files):
    def edit(lines):
        lines[5] += ",7,7"
        return lines

    return folder, csv_folder(folder, files, edit), "line 6 has 787 cells, expected 785"


@case("csv-non-numeric")
def _(folder, files):
    path = csv_folder(folder, files, set_cell(3, 5, "abc"))
    return folder, path, "line 3, column pixel5: 'abc' is not a whole number"


@case("csv-decimal")
def _(folder, files):
    path = csv_folder(folder, files, set_cell(51, 784, "12.5"))
    return folder, path, "line 51, column pixel784: '12.5' is not a whole number"


@case("csv-empty-cell")
def _(folder, files):
    return folder, csv_folder(folder, files, set_cell(3, 5, "")), "line 3, column pixel5 is empty"


@case("csv-empty-label")
def _(folder, files):
    return folder, csv_folder(folder, files, set_cell(9, 0, "")), "line 9, column label is empty"


@case("csv-pixel-300")
def _(folder, files):
    path = csv_folder(folder, files, set_cell(5, 700, "300"))
    return folder, path, "line 5, column pixel700: 300 is outside 0-255"


@case("csv-pixel-minus-1")
def _(folder, files):
    path = csv_folder(folder, files, set_cell(2, 1, "-1"))
    return folder, path, "line 2, column pixel1: -1 is outside 0-255"


@case("csv-header-only")
def _(folder, files):
    return folder, csv_folder(folder, files, lambda lines: lines[:1]), "a header but no rows"


@case("csv-header-only-without-newline")
def _(folder, files):
    path = csv_folder(folder, files, lambda lines: lines[:1])
    path.write_text(path.read_text().rstrip("\n"))
    return folder, path, "a header but no rows"


@case("csv-header-with-too-few-columns")
def _(folder, files):
    def edit(lines):
        lines[0] = ",".join(lines[0].split(",")[:100])
        return lines

    return folder, csv_folder(folder, files, edit), "the header has 100 columns, expected 785"


@case("csv-empty-file")
def _(folder, files):
    return folder, csv_folder(folder, files, lambda lines: []), "the file is empty"


@case("csv-blank-lines-only")
def _(folder, files):
    return folder, csv_folder(folder, files, lambda lines: ["", "  ", ""]), "the file is empty"


@case("csv-binary-garbage")
def _(folder, files):
    path = csv_folder(folder, files, lambda lines: lines)
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return folder, path, "binary content, not a CSV text file"


@case("csv-not-utf8")
def _(folder, files):
    path = csv_folder(folder, files, lambda lines: lines)
    path.write_bytes("label,pixel1\ncaf\xe9,1\n".encode("latin-1"))
    return folder, path, "not UTF-8 text"


@case("csv-garbage-named-directly")
def _(folder, files):
    folder.mkdir()
    path = folder / "photos.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    return path, path, "binary content"


# -- folders -------------------------------------------------------------------------------
@case("folder-with-nothing-usable")
def _(folder, files):
    folder.mkdir()
    (folder / "notes.txt").write_text("the data is elsewhere\n")
    files.idx(folder / "train-images-idx3-ubyte.gz", files.tiny(5).images)  # no labels file
    return folder, folder, "nothing usable in this folder"


@case("nonexistent-path")
def _(folder, files):
    return folder, folder, "no such file or folder"


@pytest.fixture(params=sorted(CASES))
def bad_data(request, tmp_path, data_files):
    return CASES[request.param](tmp_path / "bad", data_files)


def test_load_split_refuses_with_a_data_error_naming_the_file(bad_data):
    data, named, fragment = bad_data

    with pytest.raises(DataError) as caught:
        load_split("train", data)

    message = str(caught.value)
    assert str(named) in message, message
    assert fragment in message, message
    assert "\n" not in message


def test_cli_refuses_with_one_line_and_exit_status_2(bad_data, run_fmnist):
    data, named, fragment = bad_data

    run_fmnist("data", "info", "--data", str(data)).error_line(str(named), fragment)


def test_export_csv_refuses_bad_data_and_writes_nothing(tmp_path, data_files, run_fmnist):
    data, named, fragment = CASES["csv-pixel-300"](tmp_path / "bad", data_files)
    out = tmp_path / "out"

    run_fmnist("data", "export-csv", str(out), "--data", str(data)).error_line(str(named), fragment)

    assert not out.exists() or list(out.iterdir()) == []

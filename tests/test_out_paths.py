"""`--out` never replaces what the command reads: the input images or CSVs of `predict`,
the model and the other files of its run, the data of `export`; under any spelling of the
same file (the path itself, `..`, a symlink, a hard link)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.cli import main


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for index, path in enumerate([folder / "a.png", folder / "more" / "b.png"]):
        Image.fromarray(np.full((28, 28), 60 * (index + 1), dtype=np.uint8)).save(path)
    return folder


def _refused(capsys: pytest.CaptureFixture, args: list[str], *fragments: str) -> None:
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmnist: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _same_path(path: Path, tmp_path: Path) -> Path:
    return path


def _dotted(path: Path, tmp_path: Path) -> Path:
    return path.parent / ".." / path.parent.name / path.name


def _symlink(path: Path, tmp_path: Path) -> Path:
    link = tmp_path / "link-to-it"
    link.symlink_to(path)
    return link


def _hard_link(path: Path, tmp_path: Path) -> Path:
    link = tmp_path / "hard-link-to-it"
    os.link(path, link)
    return link


SPELLINGS: dict[str, Callable[[Path, Path], Path]] = {
    "same path": _same_path, "with ..": _dotted, "symlink": _symlink, "hard link": _hard_link,
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_predict_out_cannot_overwrite_an_input_image(run_copy: Path, images: Path, tmp_path: Path, capsys, spelling: str) -> None:
    image = images / "a.png"
    before = image.read_bytes()
    out = SPELLINGS[spelling](image, tmp_path)
    _refused(capsys, ["predict", str(run_copy), str(image), "--out", str(out)], "would overwrite", "a.png")
    assert image.read_bytes() == before


def test_predict_out_cannot_overwrite_an_image_inside_an_input_folder(run_copy: Path, images: Path, capsys) -> None:
    target = images / "more" / "b.png"
    before = target.read_bytes()
    _refused(capsys, ["predict", str(run_copy), str(images), "--out", str(target)], "b.png")
    assert target.read_bytes() == before


def test_predict_out_cannot_overwrite_an_input_csv(run_copy: Path, tmp_path: Path, capsys, data_files, tiny_test) -> None:
    csv = data_files.csv(tmp_path / "rows.csv", tiny_test)
    before = csv.read_bytes()
    _refused(capsys, ["predict", str(run_copy), str(csv), "--out", str(csv)], "rows.csv")
    assert csv.read_bytes() == before


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "metrics.json", "checkpoints/last.safetensors"])
def test_predict_out_cannot_overwrite_the_model_or_its_run(run_copy: Path, images: Path, capsys, name: str) -> None:
    target = run_copy / name
    if not target.exists():
        target.write_text("{}")
    before = target.read_bytes()
    _refused(capsys, ["predict", str(run_copy), str(images / "a.png"), "--out", str(target)], name.split("/")[-1])
    assert target.read_bytes() == before


def test_predict_out_may_replace_its_own_previous_output(run_copy: Path, images: Path, tmp_path: Path, capsys) -> None:
    # The control: an existing file that is no input is simply replaced.
    out = images / "predictions.json"
    out.write_text("old")
    assert main(["predict", str(run_copy), str(images), "--out", str(out)]) == 0
    assert out.read_text().startswith("[")


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_export_out_cannot_replace_the_trained_model(run_copy: Path, tmp_path: Path, capsys, spelling: str) -> None:
    model = run_copy / "model.safetensors"
    before = model.read_bytes()
    out = SPELLINGS[spelling](model, tmp_path)
    _refused(capsys, ["export", str(run_copy), "--format", "torchscript", "--out", str(out)], "would overwrite", "model.safetensors")
    assert model.read_bytes() == before


def test_export_out_cannot_replace_the_model_file_given(run_copy: Path, capsys) -> None:
    model = run_copy / "model.safetensors"
    before = model.read_bytes()
    _refused(capsys, ["export", str(model), "--format", "torchscript", "--out", str(model)], "model.safetensors")
    assert model.read_bytes() == before


def test_export_out_cannot_replace_its_data(run_copy: Path, tmp_path: Path, capsys, data_files, tiny_test) -> None:
    csv = data_files.csv(tmp_path / "test.csv", tiny_test)
    before = csv.read_bytes()
    _refused(capsys, ["export", str(run_copy), "--format", "torchscript", "--out", str(csv), "--data", str(csv)], "test.csv")
    assert csv.read_bytes() == before

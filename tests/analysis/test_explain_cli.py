"""`fmnist explain`: overlay PNGs for dataset-style images, and clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fmnist.data import load


def write_test_pngs(tiny_run: Path, folder: Path, count: int) -> list[Path]:
    test = load("test", tiny_run.parent / "data")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"test{index}.png"
        Image.fromarray(test.images[index]).save(path)
        paths.append(path)
    return paths


def test_explain_writes_one_overlay_per_image(tiny_run: Path, run_fmnist, tmp_path: Path):
    images = write_test_pngs(tiny_run, tmp_path / "images", 2)
    out = tmp_path / "overlays"
    done = run_fmnist("explain", str(tiny_run), *map(str, images), "--out", str(out), "--format", "json",
                      "--method", "occlusion", "--class", "Trouser")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["path"] for row in rows] == [str(path) for path in images]
    for row in rows:
        assert row["method"] == "occlusion" and row["explained_class"] == "Trouser"
        assert Path(row["overlay"]).parent == out
        assert Image.open(row["overlay"]).format == "PNG"
    assert sorted(p.name for p in out.iterdir()) == ["test0-occlusion.png", "test1-occlusion.png"]


def test_explain_reports_a_bad_file_and_explains_the_rest(tiny_run: Path, run_fmnist, tmp_path: Path):
    (image,) = write_test_pngs(tiny_run, tmp_path / "images", 1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    done = run_fmnist("explain", str(tiny_run), str(image), str(broken), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "broken.png" in done.stderr and "Traceback" not in done.stderr
    assert "test0.png" in done.stdout and (tmp_path / "out" / "test0-gradcam.png").is_file()


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_explain_refusals(tiny_run: Path, run_fmnist, tmp_path: Path):
    (image,) = write_test_pngs(tiny_run, tmp_path / "images", 1)
    run_fmnist("explain", str(tmp_path / "missing"), str(image)).error_line("no such run folder")
    run_fmnist("explain", str(tiny_run), str(image), "--class", "Hat").error_line("--class", "Trouser")
    run_fmnist("explain", str(tiny_run), str(tmp_path / "nothing.png")).error_line("nothing.png")

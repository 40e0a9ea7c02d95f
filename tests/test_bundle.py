"""`fmnist export RUN --format bundle`: a folder with the model, its ONNX twin, the config
and a model card written from the run's files; predict and serve load it; it names no path
of the machine it was made on; it is written whole or not at all."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_server import LiveServer, learnable_images, png
from PIL import Image, ImageDraw
from without_extras import SCRIPT

import fmnist
from fmnist.errors import ConfigError, RunError
from fmnist.evaluation import calibrate_run, evaluate_run
from fmnist.export_bundle import export_bundle
from fmnist.inference import load_predictor, prepare_photo
from fmnist.run import Run
from fmnist.training import read_config_file, resolve_config

FILES = {"model.safetensors", "model.onnx", "prepare_photo.py", "config.json", "README.md"}


@pytest.fixture(scope="module")
def evaluated_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny run, calibrated and evaluated as `fmnist train` leaves a run."""
    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("bundled") / "tiny-run"))
    calibrate_run(run, tiny_run.parent / "data")
    evaluate_run(run, tiny_run.parent / "data")
    return run


@pytest.fixture(scope="module")
def bundle(evaluated_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "bundle"
    done = subprocess.run(
        [sys.executable, "-m", "fmnist", "export", str(evaluated_run), "--format", "bundle", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "README.md" in done.stdout and str(out) in done.stdout
    return out


def test_the_bundle_holds_the_four_files_and_config_is_the_runs(bundle: Path, evaluated_run: Path):
    assert {entry.name for entry in bundle.iterdir()} == FILES
    config = resolve_config(file_values=read_config_file(bundle / "config.json"))
    assert config == Run(evaluated_run).config()  # `fmnist train --config config.json` trains the same recipe
    assert not [entry for entry in bundle.parent.iterdir() if entry.name.startswith(".")]  # no temporaries left


def test_the_card_is_written_from_the_runs_measurements(bundle: Path, evaluated_run: Path):
    card = (bundle / "README.md").read_text()
    metrics = Run(evaluated_run).metrics().document
    low, high = metrics["test_accuracy_ci95"]
    assert card.startswith("---\nlibrary_name: fmnist\n")
    assert f"Test accuracy **{metrics['test_accuracy']:.2%}** (95% interval {low:.2%} – {high:.2%}" in card
    for name in metrics["class_names"]:
        assert f"| {name.replace('|', chr(92) + '|')} |" in card
    recall = metrics["classification_report"]["Trouser"]["recall"]
    assert "| 1 | Trouser | trousers and jeans, seen from the front | " in card and f"| {recall:.3f} |" in card
    calibration = metrics["calibration"]
    assert f"Temperature T = {calibration['temperature']:.3f}" in card
    assert f"| raw (T = 1) | {calibration['ece_before']:.2%} |" in card
    assert f"{calibration['ece_after']:.2%}" in card
    worst = metrics["most_confused"][0]
    assert f"| {worst['true']} | {worst['predicted']} | {worst['count']} |" in card
    assert "fmnist train --config config.json --data YOUR_DATA --threads " in card
    assert metrics["data"]["content_digest"] in card
    assert Run(evaluated_run).provenance().data_digest in card
    assert "white" in card and "28×28 greyscale" in card


def test_no_file_names_a_path_of_the_machine(bundle: Path, evaluated_run: Path):
    places = {str(evaluated_run.parent.parent), str(Path.home()), str(Path(fmnist.__file__).parents[2]), str(Path.cwd())}
    for entry in bundle.iterdir():
        content = entry.read_bytes()
        for place in places:
            assert place.encode() not in content, (entry.name, place)


def test_predict_on_the_bundle_answers_as_on_the_run(bundle: Path, evaluated_run: Path, tiny_run: Path, tmp_path: Path):
    images, _ = learnable_images(tiny_run)
    expected = load_predictor(evaluated_run).probabilities(images)
    np.testing.assert_allclose(load_predictor(bundle).probabilities(images), expected, atol=1e-6)
    onnx = load_predictor(bundle, backend="onnxruntime").probabilities(images)
    assert (onnx.argmax(1) == expected.argmax(1)).all()
    for index in range(3):
        Path(tmp_path / f"{index}.png").write_bytes(png(images[index]))
    done = subprocess.run(
        [sys.executable, "-m", "fmnist", "predict", str(bundle), *sorted(map(str, tmp_path.glob("*.png"))),
         "--raw", "--format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["class_id"] for row in rows] == expected[:3].argmax(1).tolist()


def test_the_cards_onnx_example_runs_without_fmnist(bundle: Path, tmp_path: Path):
    """The card's Python block, run in a copy of the bundle where fmnist cannot be imported,
    answers for a photo what `fmnist predict` answers."""
    folder = Path(shutil.copytree(bundle, tmp_path / "shared"))
    photo = Image.new("RGB", (200, 240), (230, 230, 228))
    ImageDraw.Draw(photo).polygon([(60, 40), (140, 40), (185, 90), (145, 95), (145, 210), (55, 210), (55, 95), (15, 90)], fill=(40, 50, 90))
    photo.save(folder / "photo.jpg")
    (example,) = re.findall(r"^```python\n(.*?)^```", (folder / "README.md").read_text(), flags=re.DOTALL | re.MULTILINE)
    (folder / "example.py").write_text(example)
    blocked = "import runpy, sys; sys.modules['fmnist'] = None; runpy.run_path('example.py')"
    done = subprocess.run([sys.executable, "-c", blocked], cwd=folder, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    label, probability = done.stdout.rsplit(maxsplit=1)
    expected = load_predictor(bundle).predict(prepare_photo(folder / "photo.jpg").image[None], k=1)[0]
    assert label == expected.label and float(probability) == pytest.approx(expected.probability, abs=1e-4)


def test_serve_loads_the_bundle(bundle: Path, evaluated_run: Path, tiny_run: Path, tmp_path: Path):
    images, _ = learnable_images(tiny_run)
    expected = load_predictor(evaluated_run).predict(images[:2], k=1)
    live = LiveServer(bundle, log=tmp_path / "server.log")
    try:
        reply = live.predict([("file", "a.png", png(images[0])), ("file", "b.png", png(images[1]))])
        assert reply.status == 200, reply.body
        assert [p["label"] for p in reply.json()["predictions"]] == [p.label for p in expected]
    finally:
        live.stop()


def test_refusals_and_replacing_an_earlier_bundle(run_fmnist, bundle: Path, evaluated_run: Path, tiny_run: Path, tmp_path: Path):
    before = sorted(entry.name for entry in evaluated_run.iterdir())
    run_fmnist("export", str(evaluated_run), "--format", "bundle", "--out", str(evaluated_run)).error_line("holds the run itself")
    other_run = Path(shutil.copytree(evaluated_run, tmp_path / "other-run"))
    with pytest.raises(ConfigError, match="is a run folder; a bundle never replaces it"):
        export_bundle(evaluated_run, other_run)
    assert sorted(entry.name for entry in evaluated_run.iterdir()) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="a folder with other files"):
        export_bundle(evaluated_run, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    with pytest.raises(RunError, match="not evaluated yet .*fmnist evaluate"):
        export_bundle(tiny_run, tmp_path / "b")
    with pytest.raises(ConfigError, match="parent folder does not exist"):
        export_bundle(evaluated_run, tmp_path / "missing" / "b")
    assert not (tmp_path / "b").exists()
    again = Path(shutil.copytree(bundle, tmp_path / "again"))
    (again / "README.md").write_text("old card")
    export_bundle(evaluated_run, again)
    assert (again / "README.md").read_text() == (bundle / "README.md").read_text()
    assert sorted(entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".")) == []


def test_without_the_export_extra_the_onnx_file_is_left_out_with_a_note(evaluated_run: Path, tmp_path: Path):
    out = tmp_path / "core-bundle"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "export", str(evaluated_run), "--format", "bundle", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    assert "fmnist: note: `model.onnx` is not included" in done.stderr and "fmnist[export]" in done.stderr
    assert {entry.name for entry in out.iterdir()} == FILES - {"model.onnx"}
    card = (out / "README.md").read_text()
    assert "`model.onnx` is not included" in card and "--backend onnxruntime" not in card


def test_fmnist_runs_does_not_list_a_bundle_as_a_run(bundle: Path, evaluated_run: Path, tmp_path: Path):
    from fmnist.tracking.listing import list_runs

    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copytree(bundle, folder / "shared-bundle")
    shutil.copytree(evaluated_run, folder / "the-run")
    assert [row["run"] for row in list_runs(folder)] == ["the-run"]
    assert [row["run"] for row in list_runs(folder / "shared-bundle")] == []


def test_metrics_of_other_classes_than_the_model_are_refused(evaluated_run: Path, tmp_path: Path):
    """A model file copied into an evaluated run: its card would mix two models' figures."""
    import json
    import shutil

    from fmnist.errors import RunError

    run = shutil.copytree(evaluated_run, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["class_names"] = [f"c{i}" for i in range(len(metrics["class_names"]))]
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="other classes"):
        export_bundle(run, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()

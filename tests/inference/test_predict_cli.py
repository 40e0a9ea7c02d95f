"""`fmnist predict` end to end: files, folders and CSVs in, a table / JSON / CSV out, bad
inputs reported one line each, and every refusal a single clean line with exit status 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.data import load
from fmnist.export import export_model
from fmnist.inference import load_predictor


def run_in_process(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str, str]:
    """Run the CLI's main() in this process (no interpreter start-up per call, which costs
    seconds on a busy 2-core machine); returns (status, stdout, stderr)."""
    from fmnist.cli import main

    capsys.readouterr()
    try:
        status = main(list(arguments))
    except SystemExit as exit_:  # argparse refusals exit from inside the parser
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def test_images(tiny_run: Path) -> tuple[np.ndarray, np.ndarray]:
    split = load("test", tiny_run.parent / "data", download=False, progress=False)
    return split.images, split.labels


@pytest.fixture
def inputs(tmp_path: Path, test_images, data_files) -> dict[str, Path]:
    """Three dataset-style PNGs in a nested folder, one photo-like JPEG, a Kaggle CSV of five
    images, a text file and a truncated PNG."""
    images, labels = test_images
    folder = tmp_path / "inputs"
    (folder / "nested").mkdir(parents=True)
    for index in range(3):
        Image.fromarray(images[index]).save(folder / ("nested" if index else ".") / f"image{index}.png")
    photo = Image.fromarray(255 - np.kron(images[3], np.ones((6, 6), np.uint8))).convert("RGB")
    photo_path = tmp_path / "photo.jpg"
    photo.save(photo_path, quality=95)
    csv_path = data_files.csv(tmp_path / "rows.csv", data_files.dataset(images[4:9], labels[4:9]))
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    truncated = tmp_path / "broken.png"
    truncated.write_bytes((folder / "image0.png").read_bytes()[:60])
    return {"folder": folder, "photo": photo_path, "csv": csv_path, "text": text, "truncated": truncated}


def test_json_lists_every_input_in_order_with_the_right_predictions(run_fmnist, tiny_run, inputs, test_images):
    # --raw: the learnable images have noisy backgrounds, so they would otherwise be read as photos.
    arguments = [str(tiny_run), str(inputs["folder"]), str(inputs["csv"]), "--format", "json", "--top-k", "4", "--raw"]
    done = run_fmnist("predict", *arguments)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    folder = inputs["folder"]
    expected_paths = [str(folder / "image0.png"), str(folder / "nested" / "image1.png"), str(folder / "nested" / "image2.png")]
    expected_paths += [f"{inputs['csv']}#{row}" for row in range(1, 6)]
    assert [row["path"] for row in rows] == expected_paths
    images = test_images[0][[0, 1, 2, 4, 5, 6, 7, 8]]
    expected = load_predictor(tiny_run).predict(images, k=4)
    for row, prediction in zip(rows, expected):
        assert set(row) >= {"path", "label", "class_id", "probability", "top_k"}
        assert (row["label"], row["class_id"]) == (prediction.label, prediction.class_id)
        assert row["probability"] == pytest.approx(prediction.probability, abs=1e-5)
        assert [entry["label"] for entry in row["top_k"]] == [entry["label"] for entry in prediction.top_k]
    names = load_predictor(tiny_run).class_names
    assert [row["true_label"] for row in rows[3:]] == [names[label] for label in test_images[1][4:9]]


def test_table_csv_and_out_file(tiny_run, inputs, tmp_path, capsys):
    status, stdout, stderr = run_in_process(capsys, "predict", str(tiny_run), str(inputs["photo"]))
    assert status == 0, stderr
    header, line = stdout.splitlines()
    assert header.split()[:3] == ["input", "prediction", "prob"] and line.startswith(str(inputs["photo"]))

    out = tmp_path / "predictions.csv"
    status, stdout, stderr = run_in_process(capsys, "predict", str(tiny_run), str(inputs["csv"]), "--out", str(out))
    assert status == 0 and stdout == "" and "wrote 5 predictions" in stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["path"] for row in rows] == [f"{inputs['csv']}#{row}" for row in range(1, 6)]
    assert all(0 <= float(row["probability"]) <= 1 and row["top_k"].count(":") == 3 for row in rows)


def test_min_confidence_answers_uncertain(tiny_run, inputs, capsys):
    _, stdout, _ = run_in_process(capsys, "predict", str(tiny_run), str(inputs["csv"]), "--format", "json", "--min-confidence", "1")
    rows = json.loads(stdout)
    assert {row["label"] for row in rows} == {"uncertain"} and {row["class_id"] for row in rows} == {None}
    assert all(row["top_k"][0]["probability"] == row["probability"] for row in rows)


def test_bad_files_are_reported_one_line_each_and_skipped(run_fmnist, tiny_run, inputs, tmp_path):
    missing = tmp_path / "missing.png"
    done = run_fmnist(
        "predict", str(tiny_run), str(inputs["text"]), str(inputs["photo"]), str(inputs["truncated"]), str(missing),
        "--format", "json",
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [row["path"] for row in json.loads(done.stdout)] == [str(inputs["photo"])]
    errors = [line for line in done.stderr.splitlines() if line.startswith("fmnist: error: ")]
    assert len(errors) == 3
    assert "notes.txt: not a supported image" in errors[0]
    assert "broken.png: corrupt or truncated image" in errors[1] or "broken.png: not a supported image" in errors[1]
    assert "missing.png: cannot read" in errors[2]
    assert done.stderr.splitlines()[-1] == "fmnist: 3 input(s) failed, 1 predicted"


def test_onnxruntime_backend_gives_the_torch_answers(tiny_run, inputs, tmp_path, capsys):
    onnx_path = tmp_path / "tiny.onnx"
    export_model(tiny_run, onnx_path, fmt="onnx", data=tiny_run.parent / "data")
    by_backend = {}
    for backend, model in (("torch", tiny_run), ("onnxruntime", onnx_path)):
        status, stdout, stderr = run_in_process(capsys, "predict", str(model), str(inputs["csv"]), "--backend", backend, "--format", "json")
        assert status == 0, stderr
        by_backend[backend] = json.loads(stdout)
    for torch_row, onnx_row in zip(by_backend["torch"], by_backend["onnxruntime"]):
        assert torch_row["class_id"] == onnx_row["class_id"]
        assert torch_row["probability"] == pytest.approx(onnx_row["probability"], abs=1e-4)


def test_refusals_are_one_clean_line(run_fmnist, tiny_run, inputs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run, photo = str(tiny_run), str(inputs["csv"])
    cases = [
        ([str(tmp_path / "nowhere"), photo], ["no such run folder or model file"]),
        ([run, photo, "--backend", "onnxruntime"], ["no model.onnx in this run folder", "fmnist export"]),
        ([run, str(tmp_path / "empty")], ["no images found in the inputs"]),
        ([run, photo, "--min-confidence", "1.5"], ["--min-confidence", "between 0 and 1"]),
        ([run, photo, "--top-k", "0"], ["--top-k", "expected a number >= 1"]),
        ([run, photo, "--format", "xml"], ["--format", "invalid choice"]),
        ([run, photo, "--backend", "tensorrt"], ["--backend", "invalid choice"]),
        ([run], ["the following arguments are required: INPUT"]),
    ]
    for arguments, fragments in cases:
        status, _, stderr = run_in_process(capsys, "predict", *arguments)
        lines = stderr.splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("fmnist: error: "), (arguments, stderr)
        assert all(fragment in lines[0] for fragment in fragments), (fragments, lines[0])
    # The same contract in a real process, once: one line, exit 2, no traceback.
    run_fmnist("predict", str(tmp_path / "nowhere"), photo).error_line("no such run folder or model file")


def test_raw_refuses_photos_per_file(tiny_run, inputs, capsys):
    status, _, stderr = run_in_process(capsys, "predict", str(tiny_run), str(inputs["photo"]), "--raw")
    assert status == 2 and "Traceback" not in stderr
    assert stderr.splitlines() == [
        f"fmnist: error: {inputs['photo']}: --raw needs a 28x28 image, got 168x168 (drop --raw to convert a photo)",
        "fmnist: 1 input(s) failed, 0 predicted",
    ]

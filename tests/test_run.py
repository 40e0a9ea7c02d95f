"""The run folder as an API (fmnist.run.Run): typed readers on a real trained run, the
refusal of a folder that is not a run (library and every command taking a run), run status,
and test predictions stored at evaluation and reused by the views that follow."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fmnist.errors import RunError
from fmnist.evaluation.calibration import validation_split
from fmnist.evaluation.evaluate import evaluate_run, run_test_predictions
from fmnist.evaluation.interpretation import Interpretation
from fmnist.run import EpochRecord, Run, RunStatus, arrays_digest
from fmnist.training import TrainConfig, read_config_file, resolve_config, train


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny run (tests below change files in it)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_typed_readers_of_a_trained_run(tiny_run: Path) -> None:
    run = Run(tiny_run)
    assert run.status is RunStatus.FINISHED
    config = run.config()
    assert isinstance(config, TrainConfig) and config.model == "seed_cnn" and config.epochs == 3
    history = run.history()
    assert [record.epoch for record in history] == [1, 2, 3]
    assert all(isinstance(record, EpochRecord) and isinstance(record.val_loss, float) for record in history)
    assert sum(record.best for record in history) >= 1
    provenance = run.provenance()
    assert provenance.data["train_images"] + provenance.data["val_images"] == 400
    assert provenance.data_digest == provenance.document["data"]["content_digest"]
    assert run.model().card.model == "seed_cnn"
    assert run.calibration() is None  # train() alone does not calibrate
    assert not run.evaluated
    with pytest.raises(RunError, match="not evaluated yet"):
        run.metrics()
    assert run.test_predictions() is None
    assert "finished" in repr(run) and "seed_cnn" in repr(run)
    assert "<table" in run._repr_html_() and "seed_cnn" in run._repr_html_()


@pytest.mark.parametrize("make", ["empty folder", "other files", "file", "missing"])
def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path: Path, make: str) -> None:
    path = tmp_path / "thing"
    if make == "empty folder":
        path.mkdir()
    elif make == "other files":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif make == "file":
        path.write_text("hello")
    with pytest.raises(RunError, match="is not an fmnist run folder") as refused:
        Run(path)
    assert refused.value.fix == "pass a folder written by fmnist train"


COMMANDS_TAKING_A_RUN = {
    "evaluate": ["evaluate", "{run}"],
    "analyze": ["analyze", "{run}", "--label-issues", "0"],
    "compare": ["compare", "{run}", "{run}"],
    "calibrate": ["calibrate", "{run}"],
    "predict": ["predict", "{run}", "{image}"],
    "explain": ["explain", "{run}", "{image}"],
    "export": ["export", "{run}", "--format", "onnx", "--out", "{out}"],
    "serve": ["serve", "{run}", "--port", "0"],
}


def test_every_command_taking_a_run_refuses_a_folder_that_is_not_one(
    run_fmnist, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmnist.cli import main

    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    image = tmp_path / "image.png"
    image.write_bytes(b"not read: the model is refused first")
    expected = (f"fmnist: error: {folder} is not an fmnist run folder (no config.json/model.safetensors) "
                "(pass a folder written by fmnist train)")
    values = {"run": str(folder), "image": str(image), "out": str(tmp_path / "model.onnx")}
    for name, template in COMMANDS_TAKING_A_RUN.items():  # in-process: one interpreter start for all
        status = main([part.format(**values) for part in template])
        captured = capsys.readouterr()
        assert (name, status, captured.err.strip()) == (name, 2, expected)
    # And once as a user meets it: a process, one line, exit status 2, no traceback.
    assert run_fmnist("evaluate", str(folder)).error_line() == expected


def test_status_of_interrupted_failed_and_running_runs(run_copy: Path) -> None:
    run = Run(run_copy)
    (run_copy / "model.safetensors").unlink()
    assert run.status is RunStatus.INTERRUPTED  # resumable: config and checkpoint readable
    (run_copy / "checkpoints" / "last.safetensors").write_bytes(b"\0" * 64)
    assert run.status is RunStatus.FAILED
    (run_copy / "checkpoints" / "last.safetensors").unlink()
    assert run.status is RunStatus.INTERRUPTED  # killed in its first epoch: starts again
    (run_copy / "config.json").write_text("{not json")
    assert run.status is RunStatus.FAILED
    with pytest.raises(RunError, match="config.json"):
        run.config()
    fd = os.open(run_copy / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process holds it
        assert run.status is RunStatus.RUNNING
    finally:
        os.close(fd)
    assert run.status is RunStatus.FAILED


def test_a_damaged_epoch_log_is_named_with_its_line(run_copy: Path) -> None:
    log = run_copy / "epochs.jsonl"
    lines = log.read_text().splitlines()
    record = json.loads(lines[1])
    record["val_loss"] = "low"
    log.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    with pytest.raises(RunError, match=r"epochs.jsonl, line 2: val_loss is 'low'"):
        Run(run_copy).history()


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [("content_digest", 7, "a digest"), ("split_digest", [], "a digest"), ("root", 5, "a folder name"),
     ("class_names", ["Shirt", 3], "a list of class names")],
)
def test_damaged_data_fields_of_run_json_are_refused_by_name(run_copy: Path, key: str, value, what: str) -> None:
    # Readers compare the digests, open the root and join the class names as they are.
    path = run_copy / "run.json"
    document = json.loads(path.read_text())
    document["data"][key] = value
    path.write_text(json.dumps(document))
    with pytest.raises(RunError, match=rf"run.json: data.{key} is not {what} \({type(value).__name__}\)"):
        Run(run_copy).provenance()
    with pytest.raises(RunError, match=rf"data.{key} is not"):  # e.g. calibration, which opens the root
        validation_split(run_copy)


@pytest.mark.parametrize("value", ["digest", ["content_digest"], 3])
def test_a_run_json_whose_data_is_not_an_object_is_refused(run_copy: Path, value) -> None:
    # Read as empty it would pass every digest check, as a run from before digests does.
    path = run_copy / "run.json"
    document = json.loads(path.read_text())
    document["data"] = value
    path.write_text(json.dumps(document))
    with pytest.raises(RunError, match=rf"run.json: data is not an object \({type(value).__name__}\)"):
        Run(run_copy).provenance()


def test_history_of_a_full_run_has_no_validation_figures(tmp_path: Path, learnable_dir: Path, small_config: Path) -> None:
    config = resolve_config("seed", file_values=read_config_file(small_config), overrides={"epochs": 2, "full": True, "patience": 0})
    train(config, tmp_path / "full", data=learnable_dir)
    run = Run(tmp_path / "full")
    history = run.history()
    assert [record.epoch for record in history] == [1, 2]
    assert all(record.val_loss is None and record.val_accuracy is None for record in history)
    assert history[-1].best  # the last epoch is kept
    assert run.config().full and run.status is RunStatus.FINISHED


def test_test_predictions_are_stored_at_evaluation_and_reused(
    tiny_run: Path, run_copy: Path, run_fmnist, data_files, tmp_path: Path
) -> None:
    data = tiny_run.parent / "data"
    predictions, document = evaluate_run(run_copy, data)
    run = Run(run_copy)
    stored = run.test_predictions()
    assert stored is not None and stored.probabilities.shape == (100, 10)
    np.testing.assert_array_equal(stored.probabilities, predictions.probabilities)
    np.testing.assert_array_equal(stored.labels, predictions.labels)
    assert stored.data_digest == arrays_digest(predictions.images, predictions.labels)
    assert run.metrics().test_accuracy == pytest.approx(predictions.accuracy())
    assert run.metrics().data["content_digest"] == document["data"]["content_digest"]

    again = run_test_predictions(run_copy, data)
    assert again.reused and again.model == "seed_cnn"
    np.testing.assert_array_equal(again.predictions.probabilities, predictions.probabilities)
    interpretation = Interpretation.from_run(run_copy, data)  # analyze: no prediction pass
    assert interpretation._features is None
    np.testing.assert_array_equal(interpretation.predictions.probabilities, predictions.probabilities)
    assert interpretation.features.shape[0] == 100  # the features, computed when asked for

    # Damage the model in place, keeping its size and times: a view that ran the model
    # would now fail, so compare succeeding shows it read the stored predictions.
    model_file = run_copy / "model.safetensors"
    original, status = model_file.read_bytes(), model_file.stat()
    model_file.write_bytes(b"\0" * len(original))
    os.utime(model_file, ns=(status.st_atime_ns, status.st_mtime_ns))
    compared = run_fmnist("compare", str(run_copy), str(run_copy), "--data", str(data), "--format", "json")
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout)["accuracy_a"] == pytest.approx(predictions.accuracy())

    # Other test images: predicted again, so the damaged model is read and refused.
    other = Path(shutil.copytree(data, tmp_path / "other-data"))
    data_files.idx_split(other, data_files.tiny(100, seed=7), split="test")
    run_fmnist("compare", str(run_copy), str(run_copy), "--data", str(other)).error_line(str(model_file))

    # A model file rewritten since the evaluation (calibration replaces it) is not trusted.
    model_file.write_bytes(original)
    assert not run_test_predictions(run_copy, data).reused


def test_reordered_test_images_or_a_damaged_predictions_file_mean_predicting_again(
    tiny_run: Path, run_copy: Path, data_files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fmnist.data import load

    data = tiny_run.parent / "data"
    evaluate_run(run_copy, data)
    # The first two test images swapped: the data's content digest ignores order, the
    # stored predictions' digest does not (reused, they would be misaligned).
    test = load("test", data)
    order = np.r_[1, 0, 2 : len(test.labels)]
    shuffled = Path(shutil.copytree(data, tmp_path / "shuffled"))
    data_files.idx_split(shuffled, data_files.dataset(test.images[order], test.labels[order]), split="test")
    assert load("test", shuffled).content_digest == test.content_digest
    assert not run_test_predictions(run_copy, shuffled).reused
    assert run_test_predictions(run_copy, data).reused
    (run_copy / "test_predictions.npz").write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(RunError, match="test_predictions.npz: not readable"):
        Run(run_copy).test_predictions()
    assert not run_test_predictions(run_copy, data).reused  # predicted again, with a warning
    assert "predicting the test set again" in caplog.text

"""`fmnist train --log tensorboard,mlflow` against the real libraries: the event file is read
back with TensorBoard's own EventAccumulator, the MLflow file store is queried with
MlflowClient; an interrupted run resumed with --log mlflow continues its MLflow run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist.tracking import EPOCH_METRICS, flat_config, open_trackers, parse_log_targets


@pytest.fixture
def file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow 3 refuses its file store without this; fmnist sets it for its own process only.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def only_run(store: Path, experiment: str = "fmnist"):
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {store}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, runs
    return client, runs[0]


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_train_logs_to_tensorboard_and_mlflow(run_fmnist, tmp_path: Path, learnable_dir: Path, small_config: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # fmnist must allow its default file store itself
    result = run_fmnist(
        "train", "--config", str(small_config), "--data", str(learnable_dir), "--epochs", "2",
        "--out", "run", "--log", "tensorboard", "--log", "mlflow", "--quiet",
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the queries below
    run = tmp_path / "run"
    history = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert len(history) == 2

    # TensorBoard: every epoch's scalars at step = epoch, the test figures and the confusion image.
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for key, tag in EPOCH_METRICS.items():
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert logged == [(record["epoch"], pytest.approx(record[key], rel=1e-6)) for record in history], tag
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(metrics["test_accuracy"])
    assert events.Scalars("test/ece_calibrated")[0].value == pytest.approx(metrics["calibration"]["ece_after"])
    (image,) = events.Images("evaluation/confusion")
    assert image.step == 2 and image.width > 200 and image.height > 200
    assert image.encoded_image_string.startswith(b"\x89PNG")

    # MLflow: the default store ./mlruns, one finished run named after the folder.
    client, tracked = only_run(tmp_path / "mlruns")
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    assert tracked.data.tags["fmnist.run_dir"] == str(run.resolve())
    assert tracked.data.params["model"] == "seed_cnn"
    assert tracked.data.params["model_args.width"] == "8"
    assert tracked.data.params["epochs"] == "2"
    assert tracked.data.params.keys() == flat_config(config).keys()
    for key, tag in EPOCH_METRICS.items():
        logged = [(metric.step, metric.value) for metric in client.get_metric_history(tracked.info.run_id, tag)]
        assert sorted(logged) == [(record["epoch"], pytest.approx(record[key])) for record in history], tag
    assert tracked.data.metrics["test/accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert tracked.data.metrics["test/accuracy_ci95_low"] == pytest.approx(metrics["test_accuracy_ci95"][0])
    assert tracked.data.metrics["test/ece_calibrated"] == pytest.approx(metrics["calibration"]["ece_after"])
    artefacts = {entry.path for entry in client.list_artifacts(tracked.info.run_id)}
    assert {"report.html", "metrics.json", "config.json", "run.json", "calibration.json", "epochs.jsonl"} <= artefacts
    local = Path(client.download_artifacts(tracked.info.run_id, "metrics.json", str(tmp_path / "download")))
    assert json.loads(local.read_text()) == metrics


def test_an_interrupted_run_resumed_continues_its_mlflow_run(tmp_path: Path, learnable_writer, small_config: Path, file_store, monkeypatch):
    """Ctrl-C after epoch 1 marks the MLflow run KILLED; --resume logs epochs 2-3 into it."""
    from fmnist.training import read_config_file, resolve_config, resume, train

    monkeypatch.chdir(tmp_path)
    data = learnable_writer(tmp_path / "data")
    config = resolve_config(file_values=read_config_file(small_config), overrides={"seed": 0, "epochs": 3})
    run = tmp_path / "run"

    def stop_after_first(event) -> None:
        tracking(event)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), open_trackers(["mlflow"], run) as tracking:
        train(config, run, data=data, on_epoch=stop_after_first)
    client, tracked = only_run(tmp_path / "mlruns")
    assert tracked.info.status == "KILLED"

    with open_trackers(["mlflow"], run) as tracking:
        resume(run, data=data, on_epoch=tracking)
        tracking.finished()
    client, tracked = only_run(tmp_path / "mlruns")
    assert tracked.info.status == "FINISHED"
    history = client.get_metric_history(tracked.info.run_id, "val/accuracy")
    assert sorted(metric.step for metric in history) == [1, 2, 3]


def test_mlflow_tracking_uri_and_experiment_come_from_the_environment(tmp_path: Path, tiny_run: Path, file_store, monkeypatch):
    """The library hook: MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME choose the store."""
    from fmnist.training import EpochEnd
    from fmnist.training.config import config_from_dict

    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "shirts")
    config = config_from_dict(json.loads((tiny_run / "config.json").read_text()))
    record = json.loads((tiny_run / "epochs.jsonl").read_text().splitlines()[0])
    with open_trackers(["mlflow"], tiny_run) as tracking:
        tracking(EpochEnd(record=record, model=None, config=config))
    client, tracked = only_run(store, "shirts")
    assert client.get_metric_history(tracked.info.run_id, "train/loss")[0].value == pytest.approx(record["train_loss"])
    assert not (tmp_path / "mlruns").exists()


def test_log_values_are_checked(run_fmnist):
    assert parse_log_targets(["mlflow,tensorboard", "MLflow", " "]) == ("mlflow", "tensorboard")
    result = run_fmnist("train", "--log", "tensorboard,wandb", "--epochs", "1")
    result.error_line("--log wandb: unknown tracker", "choose from tensorboard, mlflow")


def test_an_unusable_tracking_store_is_refused_before_training(run_fmnist, tmp_path: Path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (blocker / "mlruns").as_uri())
    result = run_fmnist("train", "--log", "mlflow", "--out", "run", "--epochs", "1")
    result.error_line("MLflow tracking store", "set MLFLOW_TRACKING_URI")
    assert not (tmp_path / "run").exists()


def test_a_store_that_breaks_mid_training_is_a_warning(tmp_path: Path, tiny_run: Path, file_store, monkeypatch, caplog):
    from fmnist.training import EpochEnd
    from fmnist.training.config import config_from_dict

    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    config = config_from_dict(json.loads((tiny_run / "config.json").read_text()))
    records = [json.loads(line) for line in (tiny_run / "epochs.jsonl").read_text().splitlines()]
    with open_trackers(["mlflow"], tiny_run) as tracking:
        tracking(EpochEnd(record=records[0], model=None, config=config))
        shutil.rmtree(store)
        store.write_text("the store's disk went away\n")  # every later write fails
        for record in records[1:]:
            tracking(EpochEnd(record=record, model=None, config=config))
        tracking.finished()
    warnings = [record.getMessage() for record in caplog.records if "MLflow tracking stopped" in record.getMessage()]
    assert len(warnings) == 1 and str(tiny_run.resolve()) in warnings[0]

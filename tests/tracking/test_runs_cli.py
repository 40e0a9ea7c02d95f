"""`fmnist runs`: a folder of real tiny runs (finished and evaluated, finished only, nested
two levels down, interrupted, failed) plus folders that are no runs, listed as a table,
JSON and CSV, sorted by a column; every figure checked against the run's own files."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from fmnist.run import Run
from fmnist.tracking.listing import sort_rows


@pytest.fixture(scope="module")
def runs_folder(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fmnist.evaluation import calibrate_run, evaluate_run
    from fmnist.training import read_config_file, resolve_config, train

    data = tiny_run.parent / "data"
    root = tmp_path_factory.mktemp("runs-listing") / "runs"
    calibrated = Path(shutil.copytree(tiny_run, root / "a-calibrated"))
    calibrate_run(calibrated, data)
    evaluate_run(calibrated, data)
    # A second real run: another seed, one epoch, evaluated without calibration.
    config = resolve_config(file_values=read_config_file(tiny_run.parent / "small.toml"), overrides={"seed": 1, "epochs": 1})
    train(config, root / "b-seed1", data=data)
    evaluate_run(root / "b-seed1", data)
    shutil.copytree(tiny_run, root / "sweep" / "trial-0")  # two levels down, not evaluated
    interrupted = Path(shutil.copytree(tiny_run, root / "c-interrupted"))
    (interrupted / "model.safetensors").unlink()  # killed before the model was written
    failed = Path(shutil.copytree(tiny_run, root / "d-failed"))
    (failed / "model.safetensors").unlink()
    (failed / "checkpoints" / "last.safetensors").write_bytes(b"not a checkpoint")  # cannot be resumed
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("try a wider model\n")
    (root / "mlruns" / "0").mkdir(parents=True)  # a tracking store beside the runs is no run either
    return root


def rows_of(run_fmnist, *args: str) -> list[dict]:
    result = run_fmnist("runs", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_runs_lists_every_run_with_its_own_figures(run_fmnist, runs_folder: Path):
    rows = {row["run"]: row for row in rows_of(run_fmnist, str(runs_folder))}

    assert set(rows) == {"a-calibrated", "b-seed1", "sweep/trial-0", "c-interrupted", "d-failed"}
    assert {name: row["status"] for name, row in rows.items()} == {
        "a-calibrated": "finished", "b-seed1": "finished", "sweep/trial-0": "finished",
        "c-interrupted": "interrupted", "d-failed": "failed",
    }
    for name, row in rows.items():
        run = Run(runs_folder / name)
        history = [json.loads(line) for line in (run.root / "epochs.jsonl").read_text().splitlines()]
        provenance = json.loads((run.root / "run.json").read_text())
        assert row["model"] == "seed_cnn" and row["recipe"] == "seed"
        assert row["seed"] == (1 if name == "b-seed1" else 0)
        assert row["epochs"] == len(history) == (1 if name == "b-seed1" else 3)
        assert row["data_digest"] == provenance["data"]["content_digest"]
        assert row["train_seconds"] == pytest.approx(sum(record["seconds"] for record in history), abs=0.05)
        assert row["val_accuracy"] == [record for record in history if record["best"]][-1]["val_accuracy"]
    for name in ("a-calibrated", "b-seed1"):
        metrics = json.loads((runs_folder / name / "metrics.json").read_text())
        assert rows[name]["test_accuracy"] == metrics["test_accuracy"]
        assert rows[name]["test_ece"] == metrics["calibration"]["ece_after"]
    calibrated = json.loads((runs_folder / "a-calibrated" / "metrics.json").read_text())["calibration"]
    assert calibrated["temperature"] != 1.0 and calibrated["ece_after"] != calibrated["ece_before"]
    assert rows["sweep/trial-0"]["test_accuracy"] is None and rows["sweep/trial-0"]["test_ece"] is None


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_runs_table_csv_sort_and_not_runs(run_fmnist, runs_folder: Path):
    table = run_fmnist("runs", str(runs_folder))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["run", "status", "recipe", "model", "seed", "data", "epochs", "time", "val_acc", "test_acc", "ece"]
    assert len(lines) == 6 and "notes" not in table.stdout and "mlruns" not in table.stdout
    digest = json.loads((runs_folder / "b-seed1" / "run.json").read_text())["data"]["content_digest"]
    b_line = next(line for line in lines if line.startswith("b-seed1"))
    assert f" {digest[:12]} " in b_line and digest not in b_line

    by_accuracy = rows_of(run_fmnist, str(runs_folder), "--sort", "test_acc")
    accuracies = [row["test_accuracy"] for row in by_accuracy]
    evaluated = [value for value in accuracies if value is not None]
    assert len(evaluated) == 2 and evaluated == sorted(evaluated, reverse=True)
    assert accuracies[:2] == evaluated  # runs never evaluated come last
    assert sort_rows(by_accuracy, "seed")[-1]["run"] == "b-seed1"  # ascending for other columns

    listed = list(csv.DictReader(io.StringIO(run_fmnist("runs", str(runs_folder), "--format", "csv", "--all").stdout)))
    assert {row["run"]: row["status"] for row in listed}["notes"] == "not a run"
    assert "mlruns" not in {row["run"] for row in listed}
    a_row = next(row for row in listed if row["run"] == "a-calibrated")
    assert float(a_row["test_accuracy"]) == json.loads((runs_folder / "a-calibrated" / "metrics.json").read_text())["test_accuracy"]


def test_runs_defaults_to_the_runs_folder(run_fmnist, runs_folder: Path, tmp_path: Path):
    shutil.copytree(runs_folder / "b-seed1", tmp_path / "runs" / "only")
    rows = rows_of(run_fmnist)
    assert [row["run"] for row in rows] == ["only"]


def test_runs_refuses_an_unknown_column_and_a_missing_folder(run_fmnist, tmp_path: Path):
    line = run_fmnist("runs", str(tmp_path), "--sort", "accuracy").error_line("--sort accuracy: no such column")
    for header in ("run", "status", "recipe", "model", "seed", "data", "epochs", "time", "val_acc", "test_acc", "ece"):
        assert header in line
    run_fmnist("runs", str(tmp_path / "nowhere")).error_line("nowhere: no such folder")
    empty = run_fmnist("runs", str(tmp_path))
    assert empty.returncode == 0 and empty.stdout.strip() == "no runs"

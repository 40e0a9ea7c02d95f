"""`fmnist compare` on two real runs trained on the same data, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fmnist.evaluation.compare import compare_runs


@pytest.fixture(scope="module")
def second_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's recipe with another seed: a different model on the same data."""
    from fmnist.training import config_from_dict, train

    config = config_from_dict({**json.loads((tiny_run / "config.json").read_text()), "seed": 1})
    run = tmp_path_factory.mktemp("second") / "run"
    train(config, run, data=tiny_run.parent / "data")
    return run


def test_compare_json_matches_the_library(tiny_run: Path, second_run: Path, run_fmnist, tmp_path: Path):
    data = str(tiny_run.parent / "data")
    gallery = tmp_path / "changed.png"
    done = run_fmnist("compare", str(tiny_run), str(second_run), "--data", data, "--format", "json", "--gallery", str(gallery))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    library = compare_runs(tiny_run, second_run, data)
    assert document["mcnemar"]["p_value"] == pytest.approx(library.mcnemar().p_value)
    assert document["changed_predictions"] == len(library.changed()) > 0
    assert document["accuracy_delta"] == pytest.approx(library.b.accuracy() - library.a.accuracy())
    assert Image.open(gallery).format == "PNG"


def test_a_run_compared_with_itself_changes_nothing(tiny_run: Path, run_fmnist):
    done = run_fmnist("compare", str(tiny_run), str(tiny_run), "--data", str(tiny_run.parent / "data"))
    assert done.returncode == 0, done.stderr
    assert "exact McNemar p = 1" in done.stdout
    assert "0 test images changed" in done.stdout


def test_compare_refusals(tiny_run: Path, run_fmnist, tmp_path: Path):
    run_fmnist("compare", str(tiny_run), str(tmp_path / "missing")).error_line("no such run folder")
    run_fmnist("compare", str(tiny_run)).error_line("at least two runs", "RUN_B")


@pytest.fixture(scope="module")
def third_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fmnist.training import config_from_dict, train

    config = config_from_dict({**json.loads((tiny_run / "config.json").read_text()), "seed": 2, "epochs": 1})
    run = tmp_path_factory.mktemp("third") / "run"
    train(config, run, data=tiny_run.parent / "data")
    return run


@pytest.mark.slow
def test_compare_n_runs_tests_every_pair_with_holm_adjusted_p_values(
    tiny_run: Path, second_run: Path, third_run: Path, run_fmnist
):
    from fmnist.evaluation.compare import mcnemar_test, run_predictions
    from fmnist.evaluation.compare_many import holm_adjusted

    data = str(tiny_run.parent / "data")
    runs = [tiny_run, second_run, third_run]
    done = run_fmnist("compare", *map(str, runs), "--data", data, "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    predictions = [run_predictions(run, data) for run in runs]
    assert [row["run"] for row in document["runs"]] == [str(run) for run in runs]
    for row, predicted in zip(document["runs"], predictions, strict=True):
        assert row["accuracy"] == pytest.approx(predicted.accuracy())
        low, high = row["accuracy_ci95"]
        assert low <= row["accuracy"] <= high
    pairs = [(0, 1), (0, 2), (1, 2)]
    assert [(pair["a"], pair["b"]) for pair in document["pairwise"]] == [(str(runs[i]), str(runs[j])) for i, j in pairs]
    raw = [mcnemar_test(predictions[i].correct, predictions[j].correct).p_value for i, j in pairs]
    assert [pair["p_value"] for pair in document["pairwise"]] == pytest.approx(raw)
    assert [pair["p_holm"] for pair in document["pairwise"]] == pytest.approx(holm_adjusted(raw))
    assert document["correction"] == "Holm-Bonferroni" and "p_holm" in document["note"]

    text = run_fmnist("compare", *map(str, runs), "--data", data)
    assert text.returncode == 0, text.stderr
    assert "Holm-Bonferroni adjusted" in text.stdout and "note: 3 pairwise tests" in text.stdout
    assert "  1-2 " in text.stdout and "  1-3 " in text.stdout and "  2-3 " in text.stdout
    run_fmnist("compare", *map(str, runs), "--gallery", "x.png").error_line("--gallery", "exactly two runs")

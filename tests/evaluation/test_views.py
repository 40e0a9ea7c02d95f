"""`fmnist evaluate --split val --views`: test-time views compared on the run's validation
split, against a direct forward pass of the module, with no test image read and nothing
written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.errors import ConfigError, RunError
from fmnist.evaluation.calibration import validation_split
from fmnist.evaluation.views import VIEWS, evaluate_views, parse_views
from fmnist.models import load_model


def _direct_accuracy(run: Path, images: np.ndarray, labels: np.ndarray, *, flip: bool) -> float:
    """Accuracy of the module's own forward pass: plain, or averaged with the mirror."""
    module = load_model(run).module.eval()
    inputs = torch.from_numpy(images).float().div(255).unsqueeze(1)
    with torch.no_grad():
        logits = module(inputs)
        if flip:
            logits = (logits + module(inputs.flip(-1))) / 2
    return float((logits.argmax(1).numpy() == labels).mean())


def test_views_on_validation_match_a_direct_forward_pass(tiny_run: Path):
    images, labels = validation_split(tiny_run, tiny_run.parent / "data")
    results = {r.view: r for r in evaluate_views(tiny_run, tiny_run.parent / "data", split="val")}
    assert list(results) == list(VIEWS)
    assert all(r.images == len(labels) > 0 and r.split == "val" for r in results.values())
    assert results["none"].accuracy == pytest.approx(_direct_accuracy(tiny_run, images, labels, flip=False))
    assert results["flip"].accuracy == pytest.approx(_direct_accuracy(tiny_run, images, labels, flip=True))
    for r in results.values():
        assert r.errors == round((1 - r.accuracy) * r.images)
        assert np.isfinite(r.nll) and r.nll > 0 and r.seconds >= 0
    card = load_model(tiny_run).card
    own = [name for name, r in results.items() if r.own]
    assert own == [name for name, flags in VIEWS.items() if flags == (card.tta_flip, card.tta_shift)]


def test_validation_views_never_read_the_test_split(tiny_run: Path, tmp_path: Path):
    data = shutil.copytree(tiny_run.parent / "data", tmp_path / "train-only")
    for test_file in data.glob("t10k-*"):
        test_file.unlink()
    results = evaluate_views(tiny_run, data, split="val", views=("none",))
    assert len(results) == 1 and results[0].images > 0


def test_views_on_the_test_split(tiny_run: Path):
    (result,) = evaluate_views(tiny_run, tiny_run.parent / "data", split="test", views=("flip+shift",))
    assert result.split == "test" and result.images == 100  # learnable test split: 100 images


@pytest.mark.parametrize("text", ["flap", "", ",", "none,sideways"])
def test_unknown_views_are_refused(text: str):
    with pytest.raises(ConfigError, match="none, flip, flip\\+shift"):
        parse_views(text)


def test_view_lists_parse_in_order_once():
    assert parse_views("flip+shift, none,flip+shift") == ("flip+shift", "none")
    assert parse_views("all") == tuple(VIEWS)


def test_a_full_run_has_no_validation_split(tmp_path: Path, learnable_dir: Path, small_model_toml: str):
    from fmnist.training import read_config_file, resolve_config, train

    (tmp_path / "small.toml").write_text(small_model_toml)
    config = resolve_config(file_values=read_config_file(tmp_path / "small.toml"), overrides={"full": True, "epochs": 1, "patience": 0})
    train(config, tmp_path / "full", data=learnable_dir)
    with pytest.raises(RunError, match="--full"):
        evaluate_views(tmp_path / "full", learnable_dir, split="val")


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_prints_one_line_per_view_and_writes_nothing(tiny_run: Path, run_fmnist):
    before = _listing(tiny_run)
    data = str(tiny_run.parent / "data")
    own = run_fmnist("evaluate", str(tiny_run), "--split", "val", "--data", data)
    assert own.returncode == 0, own.stderr
    (line,) = own.stdout.strip().splitlines()
    assert "validation accuracy" in line and "(the run's own)" in line
    every = run_fmnist("evaluate", str(tiny_run), "--split", "val", "--views", "all", "--data", data, "--format", "json")
    assert every.returncode == 0, every.stderr
    document = json.loads(every.stdout)
    assert [row["view"] for row in document] == list(VIEWS)
    assert sum(row["own"] for row in document) == 1
    assert _listing(tiny_run) == before


def test_cli_refusals_are_one_line(tiny_run: Path, run_fmnist, tmp_path: Path):
    run_fmnist("evaluate", str(tiny_run), "--views", "sideways").error_line("sideways", "flip+shift")
    export = tmp_path / "model.onnx"
    export.write_bytes(b"not used: refused before it is read")
    run_fmnist("evaluate", str(export), "--split", "val").error_line("run folder")
    run_fmnist("evaluate", str(tmp_path / "missing"), "--split", "val").error_line("missing")


def test_plain_evaluate_prints_its_metrics_as_json(tiny_run: Path, run_fmnist, tmp_path: Path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    done = run_fmnist("evaluate", str(run), "--data", str(tiny_run.parent / "data"), "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document == json.loads((run / "metrics.json").read_text())
    assert document["test_images"] == 100

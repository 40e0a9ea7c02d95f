"""A specialist run at inference answers combined with its base run, never alone.

Regression: `fmnist predict`/`serve` on a specialist run used its raw 4-class model, so a
blank image came back "Pullover" (a blank is no garment the specialist knows, but it can
only name tops); `export` and `explain` worked on the 4-class model alone too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.data import CLASS_NAMES, load
from fmnist.errors import RunError
from fmnist.evaluation.specialist import predict_with_specialist
from fmnist.inference import load_predictor
from fmnist.models import load_model, save_model
from fmnist.models.saved import weights_digest

BLANK = np.zeros((28, 28), np.uint8)


def combined_evaluation(run: Path, images: np.ndarray) -> np.ndarray:
    """The probabilities `fmnist evaluate` scores a specialist run by."""
    combined, _ = predict_with_specialist(load_model(run), images, np.zeros(len(images), np.int64))
    return combined.probabilities


def moved_pair(tiny_run: Path, specialist_run: Path, root: Path, *, base_run: str) -> tuple[Path, Path]:
    """Copies of the base and the specialist under ``root``, the specialist's card naming
    ``base_run`` ({root} is replaced by ``root``)."""
    base, specialist = root / "base", root / "spec"
    shutil.copytree(tiny_run, base)
    shutil.copytree(specialist_run, specialist)
    model = load_model(specialist)
    model.card.extra["specialist"]["base_run"] = base_run.format(root=root)
    save_model(specialist / "model.safetensors", model.module, model.card)
    return base, specialist


def test_predictor_of_a_specialist_run_is_the_combination_evaluation_scores(specialist_run: Path, tiny_run: Path) -> None:
    images = np.concatenate([load("test", tiny_run.parent / "data").images, BLANK[None]])
    predictor = load_predictor(specialist_run)
    assert predictor.class_names == list(CLASS_NAMES)
    probabilities = predictor.probabilities(images)
    assert probabilities.shape == (len(images), 10)
    np.testing.assert_allclose(probabilities, combined_evaluation(specialist_run, images), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # Routed images (base top-1 a top) differ from the base's answer; others are the base's.
    base = load_predictor(tiny_run).probabilities(images)
    routed = np.isin(base.argmax(1), [0, 2, 4, 6])
    np.testing.assert_allclose(probabilities[~routed], base[~routed], atol=1e-6)
    assert routed.any()


def test_predict_cli_answers_over_the_ten_classes(run_fmnist, specialist_run: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(BLANK).save(blank)
    done = run_fmnist("predict", str(specialist_run), str(blank), "--raw", "--format", "json", "--top-k", "10")
    assert done.returncode == 0, done.stderr
    top_k = json.loads(done.stdout)[0]["top_k"]
    assert sorted(entry["label"] for entry in top_k) == sorted(CLASS_NAMES)
    expected = combined_evaluation(specialist_run, BLANK[None])[0]
    for entry in top_k:
        assert entry["probability"] == pytest.approx(float(expected[CLASS_NAMES.index(entry["label"])]), abs=1e-5)


def test_runs_moved_together_keep_working_with_a_relative_base(specialist_run, tiny_run, tmp_path) -> None:
    _, specialist = moved_pair(tiny_run, specialist_run, tmp_path, base_run="../base")
    images = load("test", tiny_run.parent / "data").images[:20]
    np.testing.assert_allclose(
        load_predictor(specialist).probabilities(images), combined_evaluation(specialist_run, images), atol=1e-5
    )


def test_a_missing_base_run_is_refused_in_one_line(run_fmnist, specialist_run, tiny_run, tmp_path) -> None:
    base, specialist = moved_pair(tiny_run, specialist_run, tmp_path, base_run="{root}/base")
    shutil.rmtree(base)
    with pytest.raises(RunError, match="its base run .* is missing"):
        load_predictor(specialist)
    image = tmp_path / "blank.png"
    Image.fromarray(BLANK).save(image)
    run_fmnist("predict", str(specialist), str(image)).error_line(f"its base run {base} is missing", "restore the base run")


def test_a_base_run_replaced_by_a_specialist_is_refused(specialist_run, tiny_run, tmp_path) -> None:
    base, specialist = moved_pair(tiny_run, specialist_run, tmp_path, base_run="{root}/base")
    shutil.rmtree(base)
    shutil.copytree(specialist_run, base)  # a four-class model where the base was
    with pytest.raises(RunError, match="is itself a specialist"):
        load_predictor(specialist)


def test_a_base_run_trained_again_is_refused_but_a_recalibrated_one_is_not(run_fmnist, specialist_run, tiny_run, tmp_path) -> None:
    """The specialist's share was fitted against its base's answers: a base of the same ten
    classes with other weights (trained again into the same folder) is refused by name."""
    import dataclasses

    import torch

    base, specialist = moved_pair(tiny_run, specialist_run, tmp_path, base_run="{root}/base")
    assert load_model(specialist).card.extra["specialist"]["base_weights"] == weights_digest(load_model(base).module)
    model = load_model(base)
    # Calibration rewrites the file with another temperature: the weights, and the fit, stand.
    save_model(base / "model.safetensors", model.module, dataclasses.replace(model.card, temperature=model.card.temperature * 1.5))
    images = load("test", tiny_run.parent / "data").images[:8]
    assert load_predictor(specialist).probabilities(images).shape == (8, 10)
    with torch.no_grad():
        next(model.module.parameters()).add_(0.01)  # stands for a retrained base
    save_model(base / "model.safetensors", model.module, model.card)
    with pytest.raises(RunError, match="was trained again or replaced since the specialist was fitted"):
        load_predictor(specialist)
    image = tmp_path / "blank.png"
    Image.fromarray(BLANK).save(image)
    run_fmnist("predict", str(specialist), str(image)).error_line(
        f"its base run {base} was trained again or replaced", f"retrain the specialist with --base {base}"
    )
    run_fmnist("evaluate", str(specialist)).error_line("was trained again or replaced", "retrain the specialist")


def test_a_card_without_the_base_digest_still_loads(specialist_run, tiny_run, tmp_path) -> None:
    """Specialists written before the digest was recorded keep working with their base."""
    _, specialist = moved_pair(tiny_run, specialist_run, tmp_path, base_run="{root}/base")
    model = load_model(specialist)
    del model.card.extra["specialist"]["base_weights"]
    save_model(specialist / "model.safetensors", model.module, model.card)
    assert load_predictor(specialist).probabilities(BLANK[None]).shape == (1, 10)


def test_export_and_explain_refuse_a_specialist_and_name_its_base(run_fmnist, specialist_run, tiny_run, tmp_path) -> None:
    out = tmp_path / "model.pt"
    run_fmnist("export", str(specialist_run), "--format", "torchscript", "--out", str(out)).error_line(
        "a specialist run", f"export the base run {tiny_run}"
    )
    assert not out.exists()
    image = tmp_path / "blank.png"
    Image.fromarray(BLANK).save(image)
    run_fmnist("explain", str(specialist_run), str(image), "--out", str(tmp_path / "maps")).error_line(
        "a specialist run", f"fmnist explain {tiny_run}"
    )


def test_the_server_answers_with_the_combination(specialist_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from live_server import LiveServer, png

    live = LiveServer(specialist_run, log=tmp_path / "server.log")
    try:
        assert live.request("GET", "/v1/model").json()["class_names"] == list(CLASS_NAMES)
        reply = live.predict([("file", "blank.png", png(BLANK))], query="?top_k=10")
        assert reply.status == 200, reply.body
        top_k = reply.json()["predictions"][0]["top_k"]
    finally:
        live.stop()
    expected = combined_evaluation(specialist_run, BLANK[None])[0]
    assert sorted(entry["label"] for entry in top_k) == sorted(CLASS_NAMES)
    for entry in top_k:
        assert entry["probability"] == pytest.approx(float(expected[CLASS_NAMES.index(entry["label"])]), abs=1e-5)


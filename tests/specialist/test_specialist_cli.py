"""`fmnist train --specialist GROUP --base RUN_DIR` from the command line, and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_specialist_from_the_command_line(run_fmnist, tiny_run: Path, small_config: Path, tmp_path: Path) -> None:
    data = tiny_run.parent / "data"
    out = tmp_path / "spec"
    done = run_fmnist("train", "--config", str(small_config), "--specialist", "tops", "--base", str(tiny_run),
                      "--init", str(tiny_run), "--data", str(data), "--out", str(out), "--threads", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "with the specialist" in done.stdout and "exact McNemar p =" in done.stdout
    again = run_fmnist("evaluate", str(out), "--data", str(data))
    assert again.returncode == 0, again.stderr
    assert "with the specialist" in again.stdout


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--specialist", "tops"], ["--specialist and --base go together", "--base RUN_DIR"]),
        (["--base", "BASE"], ["--specialist and --base go together"]),
        (["--specialist", "bottoms", "--base", "BASE"], ["unknown specialist group 'bottoms'", "tops"]),
        (["--specialist", "tops", "--base", "MISSING"], ["--base:", "no such run folder"]),
        (["--specialist", "tops", "--base", "SPECIALIST"], ["not a ten-class model (4 classes)"]),
    ],
    ids=["no-base", "no-specialist", "unknown-group", "missing-base", "base-is-a-specialist"],
)
def test_specialist_refusals(run_fmnist, tiny_run: Path, small_config: Path, tmp_path: Path, flags, fragments) -> None:
    if "SPECIALIST" in flags:
        # A four-class model file standing in for a specialist run.
        from fmnist.models import ModelCard, create_model, save_model

        specialist = tmp_path / "specialist" / "model.safetensors"
        specialist.parent.mkdir()
        save_model(specialist, create_model("seed_cnn", width=8, hidden=16, num_classes=4),
                   ModelCard(model="seed_cnn", model_args={"width": 8, "hidden": 16, "num_classes": 4},
                             class_names=["T-shirt/top", "Pullover", "Coat", "Shirt"]))
    replace = {"BASE": str(tiny_run), "MISSING": str(tmp_path / "missing"), "SPECIALIST": str(tmp_path / "specialist")}
    flags = [replace.get(flag, flag) for flag in flags]
    done = run_fmnist("train", "--config", str(small_config), "--data", str(tiny_run.parent / "data"),
                      "--out", str(tmp_path / "out"), "--threads", "1", *flags)
    done.error_line(*fragments)
    assert not (tmp_path / "out").exists()

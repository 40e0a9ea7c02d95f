"""The whole run (train, calibrate, evaluate, report) is the library's: `fmnist train` and
``fmnist.pipeline.run_pipeline`` make the same run folder; every config field is settable
from the command line (--set) and the resolved config can be printed and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist.pipeline import run_pipeline
from fmnist.training import read_config_file, resolve_config
from fmnist.training.config import SettingError, dump_config


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_the_cli_and_the_python_api_make_the_same_run_folder(
    tmp_path: Path, run_fmnist, learnable_dir: Path, small_config: Path
) -> None:
    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    done = run_fmnist("train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(cli_dir), "--threads", "1")
    assert done.returncode == 0, done.stderr
    config = resolve_config(file_values=read_config_file(small_config), overrides={"threads": 1})
    result = run_pipeline(config, api_dir, data=learnable_dir)

    assert _files(cli_dir) == _files(api_dir)
    assert {"config.json", "calibration.json", "metrics.json", "report.html", "model.safetensors"} <= _files(api_dir)
    assert (cli_dir / "config.json").read_text() == (api_dir / "config.json").read_text()
    cli_metrics = json.loads((cli_dir / "metrics.json").read_text())
    assert result.metrics == json.loads((api_dir / "metrics.json").read_text())
    # One thread, one seed: the same weights, so the same test figures.
    assert cli_metrics["test_accuracy"] == result.metrics["test_accuracy"]
    assert result.calibration is not None and result.calibration.val_images == 40
    assert f"calibrated on {result.calibration.val_images} validation images" in done.stdout
    assert result.report == api_dir / "report.html"


def test_print_config_is_the_resolved_config_and_reads_back(tmp_path: Path, run_fmnist) -> None:
    settings = ["--set", "augment.flip=true", "--set", "model_args.width=8", "--set", "optimizer=sgd", "--set", "subset=null"]
    done = run_fmnist("train", "--recipe", "seed", "--epochs", "3", *settings, "--print-config")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = resolve_config(
        "seed",
        overrides={"epochs": 3},
        settings={"augment.flip": True, "model_args.width": 8, "optimizer": "sgd", "subset": None},
    )
    assert printed == json.loads(dump_config(expected))
    assert printed["augment"]["rotate_degrees"] == 10.0  # the recipe's value, kept beside the one set
    assert not (tmp_path / "runs").exists()  # printed, not trained
    saved = tmp_path / "printed.json"
    saved.write_text(done.stdout)
    again = run_fmnist("train", "--config", str(saved), "--print-config")
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"colour": "red"}, "unknown setting 'colour' in the settings (valid settings: recipe, model, model_args, epochs"),
        ({"augment.spin": 3}, "unknown setting 'augment.spin'"),
        ({"lr": "fast"}, "lr must be of type float, got 'fast'"),
        ({"augment.flip": 1}, "augment.flip must be of type bool, got 1"),
        ({"lr.x": 1}, "lr in the settings is a single setting, not a table"),
    ],
)
def test_a_wrong_setting_is_refused_naming_it(settings: dict, message: str) -> None:
    with pytest.raises(SettingError) as refused:
        resolve_config("fast", settings=settings)
    assert message in str(refused.value)


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_wrong_settings_from_the_command_line_are_one_line(run_fmnist) -> None:
    # A key the user wrote stays as written; a range rule names the flag where there is one.
    run_fmnist("train", "--set", "colour=red", "--print-config").error_line("unknown setting 'colour'", "valid settings:")
    run_fmnist("train", "--set", "epochs=0", "--set", "epochs", "--print-config").error_line("setting 'epochs' is not KEY=VALUE")
    run_fmnist("train", "--set", "epochs=0", "--print-config").error_line("--epochs must be at least 1, got 0")


def test_dotted_settings_merge_into_the_recipe_and_apply_last() -> None:
    config = resolve_config("fast", overrides={"epochs": 4}, settings={"model_args.width_7": 48, "epochs": 5})
    assert config.model_args == {"width_14": 32, "width_7": 48}  # the recipe's other width kept
    assert config.epochs == 5
    # Another model drops the recipe's model arguments before the dotted ones are applied.
    assert resolve_config("fast", settings={"model": "seed_cnn", "model_args.width": 8}).model_args == {"width": 8}

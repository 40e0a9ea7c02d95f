"""`fmnist tune` on the default SQLite storage: a tiny search end to end, the time budget
and the pruner through the per-epoch hook, and refused search-space files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from fmnist.errors import ConfigError
from fmnist.tuning import read_search_space, tune

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_a_tiny_search_writes_runs_a_table_and_a_best_config_train_takes(
    run_fmnist, tmp_path: Path, write_space, train_only_dir: Path
):
    space = write_space(epochs=2)
    study = tmp_path / "study"

    result = run_fmnist("tune", str(space), "--out", str(study), "--trials", "3", "--data", str(train_only_dir),
                        "--baseline", "--seed", "0", "--pruner", "none")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study 'space' in sqlite:///") and "3 trials (3 complete)" in lines[0]
    assert lines[1].split() == ["trial", "state", "val_acc", "seconds", "counted", "lr", "batch_size"]
    rows = [line.split() for line in lines[2:5]]
    assert [row[0].rstrip("*") for row in rows] == ["0", "1", "2"]
    assert rows[0][1:3] == ["complete", "(baseline)"] and rows[0][-2:] == ["0.3", "256"]  # the recipe's own values
    assert all(row[-3] == "2/2" for row in rows)  # epochs counted / configured
    # Every trial is a finished run folder trained on the training split alone: the data
    # folder holds no test files, and no trial wrote a test evaluation or a report.
    for number in range(3):
        run = study / f"trial-{number:04d}"
        assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
        assert len((run / "epochs.jsonl").read_text().splitlines()) == 2
        assert not any((run / name).exists() for name in ("metrics.json", "report.html", "calibration.json"))
    assert not any((train_only_dir / name).exists() for name in TEST_FILES)

    best_line = lines[-1]
    assert best_line.startswith("best: trial ") and "best.yaml" in best_line
    best_number = int(best_line.split()[2].rstrip(","))
    best = study / "best.yaml"
    assert best.read_text().startswith("# The best trial of study 'space'")

    # The best config is a `fmnist train --config` file that trains the best trial's config.
    again = run_fmnist("train", "--config", str(best), "--data", str(train_only_dir), "--out", str(tmp_path / "again"),
                       "--no-eval", "--quiet")
    assert again.returncode == 0, again.stderr
    trained = json.loads((tmp_path / "again" / "config.json").read_text())
    assert trained == json.loads((study / f"trial-{best_number:04d}" / "config.json").read_text())

    # --trials 0 (here through the API) shows the study as it is, read back from study.db.
    shown = tune(read_search_space(space), study, trials=0)
    assert [row.number for row in shown.rows] == [0, 1, 2] and shown.best.number == best_number
    assert shown.rows[0].baseline and shown.best_config == best


FIXED_SPACE = """\
recipe: fast
base: {epochs: 6, threads: 1, model_args: {width_14: 8, width_7: 16}}
space:
  lr: {choices: [0.2]}
  batch_size: {choices: [256]}
"""


def epoch_records(row) -> list[dict]:
    return [json.loads(line) for line in (Path(row.run) / "epochs.jsonl").read_text().splitlines()]


def test_the_time_budget_and_the_pruner_stop_trials_through_the_epoch_hook(
    tmp_path: Path, write_space, train_only_dir: Path
):
    space = read_search_space(write_space(text=FIXED_SPACE))
    (free,) = tune(space, tmp_path / "free", trials=1, pruner="none", data=str(train_only_dir)).rows
    assert free.state == "complete" and free.epochs == 6 and free.stopped_by is None

    # A budget of under half the unlimited trial's time: the trial stops before an epoch
    # that would overrun it, and only the epochs that ended within the budget count.
    budget = 0.4 * sum(record["seconds"] for record in epoch_records(free))
    (timed,) = tune(space, tmp_path / "timed", trials=1, trial_seconds=budget, pruner="none",
                    data=str(train_only_dir)).rows
    counted = epoch_records(timed)[: timed.epochs]
    assert timed.state == "complete" and 1 <= timed.epochs < 6 and timed.stopped_by == "budget"
    assert sum(record["seconds"] for record in counted) <= budget
    assert timed.value == max(record["val_accuracy"] for record in counted)
    assert (Path(timed.run) / "model.safetensors").is_file()  # stopped as early stopping stops

    # A budget smaller than one epoch: no epoch counts and the trial is pruned.
    tight = tune(space, tmp_path / "tight", trials=1, trial_seconds=0.001, pruner="none", data=str(train_only_dir))
    (row,) = tight.rows
    assert row.state == "pruned" and row.epochs == 0 and row.stopped_by == "budget"
    assert tight.best is None and tight.best_config is None and len(epoch_records(row)) == 1

    # A real Optuna pruner that prunes every trial after its first epoch: the trial is
    # marked pruned, and its folder holds that epoch and a model file.
    pruned = tune(space, tmp_path / "pruned", trials=1, pruner=optuna.pruners.ThresholdPruner(lower=1.01),
                  data=str(train_only_dir))
    (row,) = pruned.rows
    assert row.state == "pruned" and row.stopped_by == "pruner" and row.epochs == 1
    assert len(epoch_records(row)) == 1 and (Path(row.run) / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_trial_folder_is_a_run_that_evaluate_takes(run_fmnist, tmp_path: Path, write_space, train_only_dir: Path,
                                                    with_test_split: Path):
    result = tune(read_search_space(write_space(epochs=1)), tmp_path / "study", trials=1, pruner="none",
                  data=str(train_only_dir))
    run = Path(result.rows[0].run)

    evaluated = run_fmnist("evaluate", str(run), "--data", str(with_test_split))

    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("test accuracy") and (run / "metrics.json").is_file()


def test_a_diverging_trial_is_recorded_failed_and_the_search_goes_on(tmp_path: Path, write_space, train_only_dir: Path):
    space = read_search_space(write_space(text=(
        "recipe: fast\nbase: {epochs: 2, threads: 1, grad_clip: 0.0, model_args: {width_14: 8, width_7: 16}}\n"
        "space:\n  lr: {choices: [100000.0]}\n"
    )))

    result = tune(space, tmp_path / "study", trials=2, pruner="none", data=str(train_only_dir))

    assert [row.state for row in result.rows] == ["failed", "failed"]
    assert all(row.error.startswith("the training loss became nan") for row in result.rows)
    assert result.best is None and not (tmp_path / "study" / "best.yaml").exists()


BAD_SPACES = [
    ("space:\n  lr: {low: 1, high: 0.1}\n", "space lr: low and high must be numbers with low < high"),
    ("space:\n  lr: {low: 0, high: 1, log: true}\n", "a log range needs low > 0"),
    ("space:\n  batch_size: {low: 32.5, high: 64}\n", "batch_size is a whole number"),
    ("space:\n  seed: {low: 0, high: 9}\n", "seed cannot vary in a search"),
    ("space:\n  val_fraction: {low: 0.1, high: 0.2}\n", "val_fraction cannot vary in a search"),
    ("space:\n  lrate: {low: 0.1, high: 1}\n", "unknown setting 'lrate'"),
    ("space:\n  augment.wobble: {choices: [1, 2]}\n", "name one of augment's settings"),
    ("space:\n  tta_flip: {low: 0, high: 1}\n", "a bool setting takes choices, not a range"),
    ("space:\n  lr: {choices: []}\n", "choices must be a non-empty list"),
    ("space:\n  lr: {low: 0.1, high: 1, spread: 2}\n", "unknown key 'spread'"),
    ("space:\n  epochs: {low: 0, high: 3}\n", "space epochs: 0 is refused (epochs must be at least 1"),
    ("base:\n  full: true\n  patience: 0\nspace:\n  lr: {low: 0.1, high: 1}\n", "base sets full"),
    ("base:\n  wobble: 1\nspace:\n  lr: {low: 0.1, high: 1}\n", "unknown setting 'wobble'"),
    ("recipe: quick\nspace:\n  lr: {low: 0.1, high: 1}\n", "unknown recipe 'quick'"),
    ("spaces:\n  lr: {low: 0.1, high: 1}\n", "unknown section 'spaces'"),
    ("base:\n  epochs: 2\n", "no space section"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_SPACES, ids=[fragment for _, fragment in BAD_SPACES])
def test_bad_search_spaces_are_refused_naming_the_entry(write_space, text: str, fragment: str):
    path = write_space(text=text)
    with pytest.raises(ConfigError) as refused:
        read_search_space(path)
    assert fragment in str(refused.value) and str(path) in str(refused.value)


def test_toml_spaces_with_dotted_names_read_like_yaml(write_space):
    toml = write_space(name="space.toml", text=(
        'recipe = "fast"\n[base]\nepochs = 3\n[space]\n'
        'lr = {low = 0.05, high = 0.5, log = true}\n'
        'augment.shift_fraction = {low = 0.0, high = 0.1, step = 0.05}\n'
        '"model_args.width_14" = {choices = [16, 32]}\n'
    ))
    space = read_search_space(toml)

    assert [parameter.name for parameter in space.parameters] == ["lr", "augment.shift_fraction", "model_args.width_14"]
    config = space.config({"lr": 0.1, "augment.shift_fraction": 0.05, "model_args.width_14": 16})
    # The recipe's other model arguments stay (a file's model_args would replace them whole).
    assert config.model_args == {"width_14": 16, "width_7": 64} and config.augment.shift_fraction == 0.05
    assert config.epochs == 3 and config.recipe == "fast"


def test_a_study_folder_and_a_study_refuse_another_space(run_fmnist, tmp_path: Path, write_space, train_only_dir: Path):
    study = tmp_path / "study"
    first = tune(read_search_space(write_space(epochs=1)), study, trials=1, pruner="none", data=str(train_only_dir))
    assert [row.state for row in first.rows] == ["complete"]
    other = write_space(epochs=2)  # same file name, so the same study name: another base

    refused = run_fmnist("tune", str(other), "--out", str(study), "--trials", "1")

    refused.error_line("study 'space' was started with another search space or budget (differs in base)")
    with pytest.raises(ConfigError, match=f"--out {study} holds the trials of study 'space', not 'second'"):
        tune(read_search_space(other), study, study_name="second", trials=1)
    with pytest.raises(ConfigError, match="--storage 'no-such://x' is not a database URL"):
        tune(read_search_space(other), tmp_path / "elsewhere", storage="no-such://x", trials=1)
    with pytest.raises(ConfigError, match="--storage sqlite:////no/such/folder/study.db: cannot open the database"):
        tune(read_search_space(other), tmp_path / "elsewhere", storage="sqlite:////no/such/folder/study.db", trials=1)
    assert not (tmp_path / "elsewhere").exists()
    assert [row.state for row in tune(read_search_space(write_space(epochs=1)), study, trials=0).rows] == ["complete"]

"""Config resolution: recipe -> config file -> flags, with clear errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmnist.errors import ConfigError
from fmnist.training import RECIPES, read_config_file, resolve_config
from fmnist.training.config import config_from_dict


def test_recipe_defaults_are_used_when_nothing_overrides() -> None:
    for name, recipe in RECIPES.items():
        assert resolve_config(name) == recipe


def test_file_overrides_recipe_and_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("recipe: seed\nepochs: 7\nlr: 0.01\naugment:\n  rotate_degrees: 5\n")
    config = resolve_config(None, file_values=read_config_file(path), overrides={"epochs": 3, "lr": None})
    assert config.epochs == 3  # the flag wins
    assert config.lr == 0.01  # the file wins over the recipe; an unset flag changes nothing
    assert config.augment.rotate_degrees == 5
    assert config.augment.shift_fraction == RECIPES["seed"].augment.shift_fraction


def test_toml_and_yaml_are_equivalent(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "seed"\nepochs = 2\nbatch_size = 64\n[augment]\nflip = true\n[model_args]\nwidth = 8\n')
    yaml_file = tmp_path / "c.yml"
    yaml_file.write_text("recipe: seed\nepochs: 2\nbatch_size: 64\naugment: {flip: true}\nmodel_args: {width: 8}\n")
    assert resolve_config(None, file_values=read_config_file(toml)) == resolve_config(
        None, file_values=read_config_file(yaml_file)
    )


def test_saved_config_round_trips() -> None:
    config = resolve_config("seed", overrides={"epochs": 2, "subset": 100})
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("epochs: 0\n", "epochs must be at least 1"),
        ("lr: -1\n", "lr must be positive"),
        ("epochs: ten\n", "epochs must be of type int"),
        ("flavour: 3\n", "unknown setting 'flavour'"),
        ("augment: {spin: 3}\n", "unknown setting 'augment.spin'"),
        ("augment: 3\n", "must be a table"),
        ("model: resnet9000\n", "unknown model 'resnet9000'"),
        ("model_args: {depth: 3}\n", "has no argument(s) depth"),
        ("optimizer: rmsprop\n", "optimizer must be one of"),
        ("val_fraction: 1.5\n", "val_fraction must be in (0, 1)"),
        ("augment: {rotate_degrees: 500}\n", "rotate_degrees must be 0-180"),
        ("recipe: turbo\n", "unknown recipe 'turbo'"),
        ("- just\n- a list\n", "expected a mapping"),
        ("epochs: [1\n", "cannot parse"),
        # Regression: the fast recipe's flip TTA with flips turned off (77% instead of 91%).
        ("augment: {flip: false}\n", "tta_flip must be false when training does not flip"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, file_values=read_config_file(path))
    assert fragment in str(caught.value)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        read_config_file(tmp_path / "missing.yaml")
    odd = tmp_path / "settings.ini"
    odd.write_text("x=1")
    with pytest.raises(ConfigError, match="unknown config format"):
        read_config_file(odd)


def test_no_augment_flag_also_turns_off_flip_tta() -> None:
    from fmnist.cli import build_parser
    from fmnist.cli.train import config_overrides

    args = build_parser().parse_args(["train", "--no-augment"])
    config = resolve_config(args.recipe, overrides=config_overrides(args))
    assert not config.augment.enabled and not config.tta_flip


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("epochs", "3", "epochs must be of type int"),
        ("epochs", 2.5, "epochs must be of type int"),
        ("lr", float("nan"), "lr must be"),
        ("lr", float("inf"), "lr must be"),
        ("amp", "yes", "amp must be of type bool"),
        ("subset", "all", "subset must be of type int"),
        ("model_args", [1], "model_args must be of type dict"),
    ],
)
def test_validate_checks_the_type_of_every_field(field: str, value: object, fragment: str) -> None:
    # A config built in code or read from a run folder gets the checks a config file gets.
    import dataclasses

    config = dataclasses.replace(RECIPES["seed"], **{field: value})
    with pytest.raises(ConfigError, match=fragment):
        config.validate()

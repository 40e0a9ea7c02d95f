"""Hostile --config files are refused in one line, in bounded memory and time.

Each case runs `fmnist train --config FILE` in a subprocess under an address-space limit
and a timeout (see limited_process), so a regression fails instead of taking the machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from limited_process import permissions_apply, run_fmnist_limited, run_limited

from fmnist.errors import ConfigError
from fmnist.training import read_config_file
from fmnist.training.config_file import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH


def billion_laughs(levels: int = 9) -> str:
    """Nested YAML aliases: a few hundred bytes that stand for 9**(levels + 1) strings."""

    def level(i: int) -> str:
        if i == 0:
            return "&l0 [" + ",".join(["lol"] * 9) + "]"
        return f"&l{i} [" + level(i - 1) + "," + ",".join([f"*l{i - 1}"] * 8) + "]"

    return level(levels)


CASES = {
    # Regression: the expansion happened in the error message's repr (MemoryError).
    "yaml-billion-laughs": ("bomb.yaml", "epochs: " + billion_laughs() + "\n", "YAML aliases (*name) are not allowed"),
    "yaml-merge-key-alias": (
        "merge.yaml",
        "augment: &base {flip: true}\nmodel_args:\n  <<: *base\n",
        "YAML aliases (*name) are not allowed",
    ),
    # Regression: RecursionError traceback from the YAML composer / tomllib.
    "yaml-deep-nesting": ("deep.yaml", "epochs: " + "[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_CONFIG_DEPTH}"),
    "yaml-deep-mapping": ("deepmap.yaml", "model_args: " + "{a: " * 200 + "1" + "}" * 200 + "\n", f"nested deeper than {MAX_CONFIG_DEPTH}"),
    "toml-deep-nesting": ("deep.toml", "epochs = " + "[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_CONFIG_DEPTH}"),
    "toml-deep-dotted-keys": ("dotted.toml", "model_args." + ".".join(["a"] * 500) + " = 1\n", f"nested deeper than {MAX_CONFIG_DEPTH}"),
    # Regression: ValueError traceback (Python refuses int() of over 4,300 digits).
    "toml-huge-integer": ("int.toml", "epochs = " + "9" * 5000 + "\n", "cannot parse a value"),
    "yaml-huge-integer": ("int.yaml", "epochs: " + "9" * 5000 + "\n", "cannot parse a value"),
    "toml-too-large": ("huge.toml", "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1) + "epochs = 1\n", "too large for a config file"),
    "yaml-too-large": ("huge.yaml", "epochs: 1\n" + "#" * MAX_CONFIG_BYTES + "\n", "too large for a config file"),
}


# Every case is read in one child process (importing fmnist.training takes seconds),
# each under the same limits; the child reports what each read raised.
CHILD = """
import json, sys
from pathlib import Path
from fmnist.training import read_config_file
outcomes = {}
for case, path in json.loads(sys.argv[1]).items():
    try:
        read_config_file(Path(path))
        outcomes[case] = "accepted"
    except BaseException as error:  # MemoryError and RecursionError included: the test reports them
        outcomes[case] = f"{type(error).__name__}: {str(error)[:500]}"
print(json.dumps(outcomes))
"""


def _read_in_child(paths: dict[str, str], folder: Path, **options) -> dict[str, str]:
    done = run_limited(["-c", CHILD, json.dumps(paths)], cwd=folder, **options)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# Not regular files: a FIFO would block open() until a writer came, /dev/zero never end.
SPECIAL = {"fifo": ("settings.yaml", "FIFO"), "device": ("settings.toml", "character device"), "folder": ("settings.yml", "folder")}


def _make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[str, str]]:
    folder = tmp_path_factory.mktemp("hostile-configs")
    paths = {}
    for case, (name, text, _fragment) in CASES.items():
        (folder / case).mkdir()
        (folder / case / name).write_text(text)
        paths[case] = str(folder / case / name)
    for kind, (name, _kind_name) in SPECIAL.items():
        (folder / kind).mkdir()
        _make_special(folder / kind / name, kind)
        paths[kind] = str(folder / kind / name)
    return {case: (paths[case], outcome) for case, outcome in _read_in_child(paths, folder).items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_config_files_are_refused_in_bounded_memory(outcomes, case):
    path, outcome = outcomes[case]
    fragment = CASES[case][2]

    assert outcome.startswith(f"ConfigError: {path}: "), outcome
    assert fragment in outcome and "\n" not in outcome, outcome


def test_the_cli_refuses_a_billion_laughs_config_in_one_line(tmp_path):
    name, text, fragment = CASES["yaml-billion-laughs"]
    path = tmp_path / name
    path.write_text(text)

    done = run_fmnist_limited("train", "--config", str(path), "--out", str(tmp_path / "run"), cwd=tmp_path)

    done.error_line(str(path), fragment)
    assert not (tmp_path / "run").exists()


def test_plain_yaml_anchors_without_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("epochs: &e 3\nlr: 0.05\n")

    assert read_config_file(path) == {"epochs": 3, "lr": 0.05}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(outcomes, kind):
    path, outcome = outcomes[kind]

    assert outcome.startswith(f"ConfigError: {path}: not a regular file but a {SPECIAL[kind][1]}"), outcome


def test_the_cli_refuses_a_fifo_config_without_blocking(tmp_path):
    path = tmp_path / "settings.yaml"
    os.mkfifo(path)

    done = run_fmnist_limited("train", "--config", str(path), "--out", str(tmp_path / "run"), cwd=tmp_path, timeout=30)

    done.error_line(str(path), "not a regular file but a FIFO")


def test_an_unreadable_config_is_one_line(tmp_path, request):
    if not permissions_apply(tmp_path):
        pytest.skip("this process cannot drop the power to read unreadable files (root without setpriv/CAP_SETPCAP)")
    path = tmp_path / "secret.yaml"
    path.write_text("epochs: 1\n")
    path.chmod(0)
    request.addfinalizer(lambda: path.chmod(0o644))

    outcome = _read_in_child({"secret": str(path)}, tmp_path, unprivileged=True)["secret"]

    assert outcome.startswith(f"ConfigError: {path}: permission denied"), outcome


def test_missing_config_is_still_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such config file"):
        read_config_file(tmp_path / "nowhere.toml")

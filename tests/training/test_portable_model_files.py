"""Model cards and exported metadata carry no absolute path of the training machine
(regression: the card's specialist base_run and initialised_from, and the ONNX/TorchScript
metadata's model source, were absolute paths). A specialist stores its base run relative to
its own run folder, so the two keep working when moved together."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmnist.evaluation.specialist import load_base
from fmnist.export import export_model
from fmnist.models import load_model
from fmnist.tensorfile import load_tensor_file
from fmnist.training import train
from fmnist.training.config import config_from_dict


def strings(value: object) -> Iterator[str]:
    """Every string in a JSON-like value, looking inside strings that hold JSON too."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value
        if value[:1] in "[{":
            try:
                yield from strings(json.loads(value))
            except json.JSONDecodeError:
                pass


def machine_paths(value: object, *roots: Path) -> list[str]:
    return [
        text for text in strings(value)
        if text.startswith(("/", "~")) or any(str(root) in text for root in roots) or str(Path.home()) in text
    ]


@pytest.fixture(scope="module")
def specialist_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tops specialist of tiny_run, started from tiny_run's weights (--init): both paths in the card."""
    root = tmp_path_factory.mktemp("portable")
    base = Path(shutil.copytree(tiny_run, root / "base"))
    base_config = config_from_dict(json.loads((base / "config.json").read_text()))
    config = dataclasses.replace(
        base_config, epochs=1, specialist="tops", base_run=str(base), init_run=str(base),
        model_args={**base_config.model_args, "num_classes": 4},
    )
    config.validate()
    train(config, root / "specialist", data=tiny_run.parent / "data")
    return root / "specialist"


def test_a_model_card_holds_no_machine_path(specialist_run: Path, tmp_path_factory: pytest.TempPathFactory):
    _, card = load_tensor_file(specialist_run / "model.safetensors")

    assert machine_paths(card, tmp_path_factory.getbasetemp()) == []
    assert card["extra"]["specialist"]["base_run"] == os.path.join("..", "base")
    assert card["extra"]["initialised_from"] == "base"
    assert card["extra"]["run"] == "specialist"


def test_the_base_run_is_found_relative_to_the_specialist_when_both_move(specialist_run: Path, tmp_path: Path):
    assert load_base(load_model(specialist_run)).path.parent.samefile(specialist_run.parent / "base")

    moved = tmp_path / "elsewhere"
    for name in ("base", "specialist"):
        shutil.copytree(specialist_run.parent / name, moved / name)

    base = load_base(load_model(moved / "specialist"))
    assert base.path.parent.samefile(moved / "base")


def test_exported_metadata_holds_no_machine_path(tiny_run: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    onnx = pytest.importorskip("onnx")
    data = tiny_run.parent / "data"

    export_model(tiny_run, tmp_path / "model.onnx", fmt="onnx", data=data)
    model = onnx.load(str(tmp_path / "model.onnx"))
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert machine_paths(metadata, tmp_path_factory.getbasetemp()) == [], metadata
    assert json.loads(metadata["fmnist.model"])["source"] == f"{tiny_run.name}/model.safetensors"
    assert str(tmp_path_factory.getbasetemp()).encode() not in (tmp_path / "model.onnx").read_bytes()
    assert machine_paths(model.doc_string, tmp_path_factory.getbasetemp()) == []

    export_model(tiny_run, tmp_path / "model.pt", fmt="torchscript", data=data)
    with zipfile.ZipFile(tmp_path / "model.pt") as archive:
        name = next(n for n in archive.namelist() if n.endswith("extra/fmnist.json"))
        assert machine_paths(json.loads(archive.read(name)), tmp_path_factory.getbasetemp()) == []

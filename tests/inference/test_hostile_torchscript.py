"""A TorchScript file is a program: fmnist runs only what `fmnist export` writes (a traced
graph of tensor operations), checks its archive before loading it, and turns a model that
fails while running into one line. Every hostile file is built here with torch itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fmnist.errors import RunError
from fmnist.export import export_torchscript
from fmnist.inference.predictor import load_predictor

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
METADATA = {
    "fmnist.class_names": json.dumps(CLASSES),
    "fmnist.temperature": "1.0",
    "fmnist.tta_flip": "false",
    "fmnist.tta_shift": "false",
    "fmnist.export_format": "2",
}


def save(module: torch.jit.ScriptModule, path: Path, *, metadata: str | None = None) -> Path:
    torch.jit.save(module, str(path), _extra_files={"fmnist.json": metadata if metadata is not None else json.dumps(METADATA)})
    return path


class WritesAFile(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mapped = torch.from_file(self.target, shared=True, size=5, dtype=torch.uint8)
        mapped.fill_(65)
        logits = torch.zeros(images.shape[0], 10) + mapped.float().sum() * 0
        return torch.softmax(logits, 1), logits


class Loops(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.zeros(images.shape[0], 10)
        for _ in range(3):
            logits = logits + 1
        return torch.softmax(logits, 1), logits


class SetsStateOnLoad(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.zeros(images.shape[0], 10)
        return torch.softmax(logits, 1), logits

    @torch.jit.export
    def __getstate__(self) -> str:
        return self.target

    @torch.jit.export
    def __setstate__(self, state: str) -> None:
        self.target = state
        torch.from_file(state, shared=True, size=5, dtype=torch.uint8).fill_(66)


class FixedBatch(torch.nn.Module):
    """Traced on two images, so the batch size is a constant of the graph: one image fails."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = images.float().reshape(2, 784)[:, :10]
        return torch.softmax(logits, 1), logits


def test_a_graph_that_writes_files_is_refused_before_it_runs(tmp_path: Path):
    target = tmp_path / "victim.txt"
    path = save(torch.jit.script(WritesAFile(str(target))), tmp_path / "evil.pt")
    with pytest.raises(RunError, match="aten::from_file"):
        load_predictor(path)
    assert not target.exists()


def test_control_flow_is_refused(tmp_path: Path):
    with pytest.raises(RunError, match="prim::Loop.*control flow"):
        load_predictor(save(torch.jit.script(Loops()), tmp_path / "loops.pt"))


def test_code_that_runs_while_loading_is_refused_before_loading(tmp_path: Path):
    target = tmp_path / "victim.txt"
    target.write_bytes(b"clean")
    path = save(torch.jit.script(SetsStateOnLoad(str(target))), tmp_path / "setstate.pt")
    target.write_bytes(b"clean")  # saving did not call __setstate__, but be sure
    with pytest.raises(RunError, match="__setstate__"):
        load_predictor(path)
    assert target.read_bytes() == b"clean"


def test_metadata_claiming_more_than_the_bound_is_refused_from_the_directory(tmp_path: Path):
    path = save(torch.jit.trace(FixedBatch(), torch.zeros(2, 28, 28, dtype=torch.uint8)), tmp_path / "big.pt",
                metadata=" " * (2 << 20) + json.dumps(METADATA))  # fmt: skip
    with pytest.raises(RunError, match="fmnist.json claims 2,"):
        load_predictor(path)


def test_a_model_that_fails_while_running_is_one_line(tmp_path: Path, run_fmnist):
    path = save(torch.jit.trace(FixedBatch(), torch.zeros(2, 28, 28, dtype=torch.uint8)), tmp_path / "fixed.pt")
    predictor = load_predictor(path)  # the probe's two images pass
    with pytest.raises(RunError, match="failed to run") as failed:
        predictor.probabilities(torch.zeros(1, 28, 28, dtype=torch.uint8).numpy())
    assert "\n" not in str(failed.value)
    image = tmp_path / "one.png"
    from PIL import Image

    Image.new("L", (28, 28), 0).save(image)
    run_fmnist("predict", str(path), str(image)).error_line("failed to run")


def test_every_export_passes_the_check(tiny_run: Path, tmp_path: Path):
    out = export_torchscript(tiny_run, tmp_path / "model.pt").path
    predictor = load_predictor(out)
    assert predictor.class_names and predictor.probabilities(torch.zeros(3, 28, 28, dtype=torch.uint8).numpy()).shape[0] == 3


def test_an_export_is_recognised_under_any_suffix_case_and_named_where_a_run_is_needed(tiny_run: Path, tmp_path: Path, run_fmnist):
    out = export_torchscript(tiny_run, tmp_path / "model.pt").path
    upper = out.rename(tmp_path / "MODEL.PT")
    assert load_predictor(upper).class_names
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(upper.read_bytes())
    assert load_predictor(renamed).class_names  # a zip archive is TorchScript, whatever its name
    run_fmnist("calibrate", str(upper)).error_line("exported TorchScript file", "run folder")
    run_fmnist("compare", str(renamed), str(tiny_run)).error_line("exported TorchScript file")

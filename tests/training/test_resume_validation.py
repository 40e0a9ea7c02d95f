"""`train --resume` checks the run folder before training: a malformed config.json or
checkpoint is a one-line RunError naming the file and the fix, never a traceback, and never
a run that finishes silently with a different state (a model written from it).

Every bad case is made from a real run folder (the session's tiny run) by changing one thing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fmnist.errors import RunError
from fmnist.tensorfile import METADATA_KEY, load_tensor_file
from fmnist.training import resume


@pytest.fixture
def data_dir(tiny_run: Path) -> Path:
    return tiny_run.parent / "data"


def _rewrite_checkpoint(run: Path, change: Callable[[dict[str, torch.Tensor], dict], None]) -> None:
    path = run / "checkpoints" / "last.safetensors"
    tensors, document = load_tensor_file(path)
    change(tensors, document)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(document)})


def _refused(run: Path, data: Path, fragment: str, file: str) -> str:
    with pytest.raises(RunError) as caught:
        resume(run, data=data)
    message = str(caught.value)
    assert file in message and fragment in message, message
    assert "\n" not in message
    # Nothing was trained or written from the bad state.
    assert not (run / "model.safetensors").exists()
    return message


def test_an_intact_interrupted_run_resumes(interrupted_run: Path, data_dir: Path) -> None:
    # The control for every case below: the unchanged copy resumes and writes its model.
    resume(interrupted_run, data=data_dir)
    assert (interrupted_run / "model.safetensors").is_file()


def _edit_config(run: Path, change: Callable[[dict], object]) -> None:
    path = run / "config.json"
    values = json.loads(path.read_text())
    replaced = change(values)
    path.write_text(json.dumps(values if replaced is None else replaced))


CONFIG_CASES = {
    "epochs as a string": (lambda c: c.update(epochs="3"), "epochs must be of type int"),
    "negative epochs": (lambda c: c.update(epochs=-1), "epochs must be at least 1"),
    "unknown key": (lambda c: c.update(colour="red"), "unknown setting 'colour'"),
    "NaN learning rate": (lambda c: c.update(lr=math.nan), "lr must be"),
    "infinite weight decay": (lambda c: c.update(weight_decay=math.inf), "weight_decay must be"),
    "boolean batch size": (lambda c: c.update(batch_size=True), "batch_size must be of type int"),
    "augment not a table": (lambda c: c.update(augment=3), "augment in config.json must be a table"),
    "erase_scale of strings": (lambda c: c["augment"].update(erase_scale=["a", "b"]), "erase_scale must be of type"),
    "unknown model": (lambda c: c.update(model="nope"), "unknown model 'nope'"),
    "unknown model argument": (lambda c: c["model_args"].update(depth=3), "has no argument(s) depth"),
    "not an object": (lambda c: [c], "expected an object of settings"),
    "threads zero": (lambda c: c.update(threads=0), "threads must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_malformed_config_json_is_refused(interrupted_run: Path, data_dir: Path, case: str) -> None:
    change, fragment = CONFIG_CASES[case]
    _edit_config(interrupted_run, change)
    message = _refused(interrupted_run, data_dir, fragment, "config.json")
    assert "restore the run's config.json, or start a new run" in message


def test_a_config_json_that_is_not_json_is_refused(interrupted_run: Path, data_dir: Path) -> None:
    (interrupted_run / "config.json").write_text('{"epochs": 3,')
    _refused(interrupted_run, data_dir, "not valid JSON", "config.json")


def test_a_config_json_edited_after_the_checkpoint_is_refused(interrupted_run: Path, data_dir: Path) -> None:
    # Valid on its own, but not the config the checkpoint was trained with: the run would
    # silently continue as a different one.
    _edit_config(interrupted_run, lambda c: c.update(lr=c["lr"] * 10))
    _refused(interrupted_run, data_dir, "another config than the run's config.json (differs in lr)", "last.safetensors")


def _first_weight(tensors: dict[str, torch.Tensor]) -> str:
    return next(key for key in sorted(tensors) if key.startswith("model.") and key.endswith("weight"))


def _drop_tensor(tensors: dict, document: dict) -> None:
    key = _first_weight(tensors)
    del tensors[key]
    del document["model"][key.removeprefix("model.")]


def _reshape_tensor(tensors: dict, document: dict) -> None:
    key = _first_weight(tensors)
    tensors[key] = torch.zeros(tensors[key].numel() + 1)


def _retype_tensor(tensors: dict, document: dict) -> None:
    key = _first_weight(tensors)
    tensors[key] = tensors[key].double()


def _nan_weight(tensors: dict, document: dict) -> None:
    key = _first_weight(tensors)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = math.nan


def _truncate_rng(tensors: dict, document: dict) -> None:
    tensors["rng.rank0.torch"] = tensors["rng.rank0.torch"][:100].clone()


def _float_rng(tensors: dict, document: dict) -> None:
    tensors["rng.rank0.order"] = tensors["rng.rank0.order"].float()


def _reshape_moment(tensors: dict, document: dict) -> None:
    key = next(key for key in sorted(tensors) if key.endswith(".exp_avg"))
    tensors[key] = torch.zeros(3, 3)


def _drop_group(tensors: dict, document: dict) -> None:
    document["optimizer"]["param_groups"].pop()


def _group_setting(tensors: dict, document: dict) -> None:
    document["optimizer"]["param_groups"][0]["lr"] = "fast"


def _state_of_unknown_parameter(tensors: dict, document: dict) -> None:
    document["optimizer"]["state"]["999"] = document["optimizer"]["state"]["0"]


def _extra_weight_average(tensors: dict, document: dict) -> None:
    document["ema"] = {"n_averaged": {"__tensor__": "rng.rank0.torch"}}


def _missing_reference(tensors: dict, document: dict) -> None:
    del tensors["rng.rank0.augment"]


CHECKPOINT_CASES = {
    "epochs_done beyond epochs": (lambda t, d: d.update(epochs_done=7), "epochs_done is 7, outside 0-3"),
    "negative epochs_done": (lambda t, d: d.update(epochs_done=-1), "epochs_done is -1"),
    "epochs_done as a string": (lambda t, d: d.update(epochs_done="2"), "'epochs_done' is malformed"),
    "step out of step with the epochs": (lambda t, d: d.update(step=d["step"] + 5), "step is"),
    "history shorter than the epochs": (lambda t, d: d["history"].pop(), "the history has 2 epochs"),
    "history entry not a record": (lambda t, d: d["history"].__setitem__(0, 5), "history entry 1 is malformed"),
    "early stopping without a key": (lambda t, d: d["early_stopping"].pop("bad_epochs"), "early-stopping state"),
    "plateau scale zero": (lambda t, d: d["plateau"].update(scale=0), "plateau state"),
    "missing rng": (lambda t, d: d.pop("rng"), "no 'rng' in the training state"),
    "missing weight": (_drop_tensor, "missing"),
    "mis-shaped weight": (_reshape_tensor, "the run needs"),
    "float64 weight": (_retype_tensor, "torch.float64"),
    "NaN weight": (_nan_weight, "NaN or infinite"),
    "truncated RNG state": (_truncate_rng, "random-generator tensor rank0.torch"),
    "float RNG state": (_float_rng, "random-generator tensor rank0.order"),
    "mis-shaped optimizer moment": (_reshape_moment, "has shape (3, 3)"),
    "optimizer group missing": (_drop_group, "parameter groups"),
    "optimizer setting of the wrong type": (_group_setting, "setting lr is 'fast'"),
    "optimizer state of an unknown parameter": (_state_of_unknown_parameter, "names parameter 999"),
    "weight average the run does not have": (_extra_weight_average, "has no weight average"),
    "reference to a missing tensor": (_missing_reference, "does not hold"),
    "not a training checkpoint": (lambda t, d: d.update(format="fmnist-model/1"), "not an fmnist training checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_a_malformed_checkpoint_is_refused(interrupted_run: Path, data_dir: Path, case: str) -> None:
    change, fragment = CHECKPOINT_CASES[case]
    _rewrite_checkpoint(interrupted_run, change)
    _refused(interrupted_run, data_dir, fragment, "last.safetensors")


def test_the_refusal_is_one_line_on_the_command_line(interrupted_run: Path, data_dir: Path, run_fmnist) -> None:
    _rewrite_checkpoint(interrupted_run, lambda t, d: d.update(epochs_done=7))
    line = run_fmnist("train", "--resume", str(interrupted_run), "--data", str(data_dir), "--no-eval").error_line(
        "last.safetensors", "epochs_done is 7"
    )
    assert "delete" in line and "--out" in line  # the fix
    assert not (interrupted_run / "model.safetensors").exists()

"""--pretrained / --init from the command line: one-line refusals, and a tiny fine-tuning run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fmnist.models import create_model


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--model", "resnet18", "--pretrained", "missing.pth"], ["--pretrained missing.pth: no such weights file"]),
        (["SMALL", "--pretrained", "weights.pth"], ["--pretrained needs an ImageNet backbone; seed_cnn has none", "model resnet18 or mobilenet_v2"]),
        (["SMALL", "--init", "no-such-run"], ["--init:", "no such run folder"]),
        (["--model", "resnet18", "--pretrained", "w.pth", "--init", "RUN"], ["--init must be unset when pretrained is set"]),
        (["SMALL", "--freeze-epochs", "-1"], ["--freeze-epochs must be zero (off) or positive"]),
        (["--model", "resnet18", "--image-size", "16"], ["image_size must be a whole number of pixels >= 32"]),
    ],
    ids=["missing-file", "no-backbone", "missing-init-run", "two-starts", "negative-freeze", "tiny-image-size"],
)
def test_transfer_refusals(run_fmnist, learnable_dir: Path, small_config: Path, tiny_run: Path, tmp_path: Path, flags, fragments) -> None:
    # Cases marked SMALL use the small seed_cnn config; the others name their model.
    replace = {"RUN": [str(tiny_run)], "SMALL": ["--config", str(small_config)]}
    flags = [part for flag in flags for part in replace.get(flag, [flag])]
    done = run_fmnist("train", "--data", str(learnable_dir), "--out", str(tmp_path / "out"), *flags)
    done.error_line(*fragments)
    assert not (tmp_path / "out").exists()


def test_pretrained_cannot_be_changed_on_resume(run_fmnist, tiny_run: Path) -> None:
    run_fmnist("train", "--resume", str(tiny_run), "--pretrained", "w.pth").error_line("--pretrained cannot be combined with --resume")


@pytest.mark.slow
def test_fine_tuning_from_the_command_line(run_fmnist, learnable_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", image_size=32, num_classes=1000)
    weights = tmp_path / "mobilenet_v2.safetensors"
    save_file({k.removeprefix("backbone."): v.contiguous() for k, v in model.state_dict().items() if k.startswith("backbone.")}, str(weights))
    out = tmp_path / "run"
    done = run_fmnist("train", "--model", "mobilenet_v2", "--pretrained", str(weights), "--image-size", "32",
                      "--freeze-epochs", "1", "--backbone-lr-scale", "0.1", "--lr", "0.01", "--epochs", "2",
                      "--subset", "100", "--data", str(learnable_dir), "--out", str(out), "--threads", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    from fmnist.models import load_model

    card = load_model(out).card
    assert card.model == "mobilenet_v2" and card.model_args["image_size"] == 32
    assert card.extra["initialised_from"] == weights.name  # the file's name, not the machine's path

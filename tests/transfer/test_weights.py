"""ImageNet weight files: torchvision-named state dicts load into our backbones, as
safetensors or as a .pth read with weights_only=True; everything else is refused with one
line. No network: the named set is served from torch.hub's cache or refused offline."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fmnist.errors import ConfigError
from fmnist.models import create_model
from fmnist.models.pretrained import (
    fetch_named_weights,
    load_pretrained,
    read_state_dict,
)

# Facts about torchvision 0.26's state dicts (checked against torchvision itself): the
# number of tensors and some names with their shapes. Our modules must match them.
TORCHVISION = {
    "resnet18": {
        "count": 122,
        "head": ("fc.weight", "fc.bias"),
        "shapes": {
            "conv1.weight": (64, 3, 7, 7),
            "layer1.0.bn1.running_mean": (64,),
            "layer2.0.downsample.0.weight": (128, 64, 1, 1),
            "layer4.1.conv2.weight": (512, 512, 3, 3),
            "fc.weight": (1000, 512),
        },
    },
    "mobilenet_v2": {
        "count": 314,
        "head": ("classifier.1.weight", "classifier.1.bias"),
        "shapes": {
            "features.0.0.weight": (32, 3, 3, 3),
            "features.1.conv.0.0.weight": (32, 1, 3, 3),
            "features.2.conv.0.0.weight": (96, 16, 1, 1),
            "features.18.0.weight": (1280, 320, 1, 1),
            "classifier.1.weight": (1000, 1280),
        },
    },
}


def imagenet_state(name: str, *, seed: int = 1) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's layout, with a 1000-class head."""
    torch.manual_seed(seed)
    model = create_model(name, image_size=32, num_classes=1000)
    state = {k.removeprefix("backbone."): v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    for value in state.values():
        if value.is_floating_point():
            value.normal_()  # distinct from any fresh initialisation
    return state


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_state_dict_layout_matches_torchvision(name: str) -> None:
    state = imagenet_state(name)
    assert len(state) == TORCHVISION[name]["count"]
    for key, shape in TORCHVISION[name]["shapes"].items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("name", list(TORCHVISION))
def test_weights_file_loads_into_the_backbone_and_the_head_is_new(tmp_path: Path, name: str, suffix: str) -> None:
    state = imagenet_state(name)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    model = create_model(name, image_size=32)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.removeprefix("backbone.") in TORCHVISION[name]["head"]}
    transfer = load_pretrained(model, name, str(path))

    loaded = model.state_dict()
    for key, value in state.items():
        if key in TORCHVISION[name]["head"]:
            continue
        assert torch.equal(loaded[f"backbone.{key}"], value), key
    assert len(transfer.loaded) == TORCHVISION[name]["count"] - 2
    assert sorted(transfer.reinitialised) == sorted(fresh_head)
    for key, value in fresh_head.items():
        assert torch.equal(loaded[key], value)  # the 10-class head kept its initialisation
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_nested_and_data_parallel_state_dicts_load(tmp_path: Path) -> None:
    state = imagenet_state("resnet18")
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, path)
    assert set(read_state_dict(path)) == set(state)


class Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"conv1.weight": torch.zeros(1), "payload": Exploit(marker)}, handle, pickle_module=pickle)
    with pytest.raises(ConfigError, match="refused: it holds pickled objects other than tensors"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda path: None, "no such weights file"),
        (lambda path: path.write_bytes(b"not a checkpoint at all"), "cannot read weights"),
        (lambda path: torch.save([torch.zeros(2)], path), "not a state dict of tensors"),
    ],
    ids=["missing", "garbage", "not-a-dict"],
)
def test_unreadable_files_are_refused(tmp_path: Path, make, fragment: str) -> None:
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(ConfigError, match=fragment) as error:
        read_state_dict(path)
    assert "\n" not in str(error.value)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"x")
    with pytest.raises(ConfigError, match="unknown weights format '.h5'"):
        read_state_dict(path)


def test_wrong_shapes_are_refused(tmp_path: Path) -> None:
    state = imagenet_state("resnet18")
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a one-channel conv1: not ImageNet's
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ConfigError, match=r"wrong shapes \(conv1.weight \(64, 1, 7, 7\) instead of \(64, 3, 7, 7\)\)"):
        load_pretrained(create_model("resnet18", image_size=32), "resnet18", str(path))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet_state("mobilenet_v2").items()}, str(path))
    with pytest.raises(ConfigError, match="not torchvision-style resnet18 weights: missing"):
        load_pretrained(create_model("resnet18", image_size=32), "resnet18", str(path))


def test_models_without_a_backbone_refuse_pretrained_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrained needs an ImageNet backbone"):
        load_pretrained(create_model("seed_cnn"), "seed_cnn", "imagenet")


def test_named_set_comes_from_the_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    state = imagenet_state("resnet18")
    torch.save(state, cached)
    model = create_model("resnet18", image_size=32)
    load_pretrained(model, "resnet18", "imagenet")
    assert torch.equal(model.state_dict()["backbone.layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])


def test_offline_named_set_gives_one_error_saying_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # A proxy on a closed local port: the download fails at once, with or without internet.
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ConfigError) as error:
        fetch_named_weights("mobilenet_v2", "imagenet")
    message = str(error.value)
    assert "cannot download the imagenet weights for mobilenet_v2" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth") in message
    assert "set pretrained to a local" in message and "\n" not in message


def test_unknown_named_set_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"named sets: imagenet"):
        fetch_named_weights("resnet18", "laion")

"""Every registered model is checked the same way: shape, FLOPs, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist.errors import ConfigError, RunError
from fmnist.models import (
    ModelCard,
    count_flops,
    count_parameters,
    create_model,
    list_models,
    load_model,
    save_model,
)
from fmnist.models.fast_cnn import WhiteningStem


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_contract_input_to_ten_logits(name: str) -> None:
    model = create_model(name).eval()
    images = torch.rand(3, 1, 28, 28)
    assert model(images).shape == (3, 10)
    assert model(images.contiguous(memory_format=torch.channels_last)).shape == (3, 10)
    assert count_parameters(model) > 1000
    assert count_flops(model) > 100_000


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_its_number_of_outputs_from_num_classes(name: str) -> None:
    """Own data brings 2 to 100 classes: every model must honour num_classes."""
    assert create_model(name, num_classes=3).eval()(torch.rand(1, 1, 28, 28)).shape == (1, 3)


@pytest.mark.parametrize("name", list_models())
def test_every_model_survives_a_save_load_round_trip(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    if hasattr(model, "fit_to_data"):
        model.fit_to_data(torch.rand(64, 1, 28, 28))
    model.train()
    model(torch.rand(8, 1, 28, 28))  # move BatchNorm statistics away from their defaults
    model.eval()
    save_model(tmp_path / "m.safetensors", model, ModelCard(model=name))
    loaded = load_model(tmp_path / "m.safetensors")
    saved, restored = model.state_dict(), loaded.module.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[key], restored[key]) for key in saved)
    # Loaded models hold their weights channels_last (the layout inputs come in): the same
    # layout on both sides gives bitwise the same outputs.
    images = torch.rand(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    assert torch.equal(model.to(memory_format=torch.channels_last)(images), loaded.module(images))
    assert not loaded.module.training


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        create_model("resnet9000")
    for name in list_models():
        assert name in str(caught.value)


def test_unknown_model_argument_is_refused() -> None:
    with pytest.raises(ConfigError, match="no argument"):
        create_model("seed_cnn", depth=3)


def test_model_arguments_change_the_model() -> None:
    assert count_parameters(create_model("seed_cnn", width=8)) < count_parameters(create_model("seed_cnn"))


def test_whitening_stem_decorrelates_patches() -> None:
    torch.manual_seed(0)
    # Smooth images: neighbouring pixels strongly correlated, as in real photos.
    images = torch.nn.functional.avg_pool2d(torch.rand(256, 1, 32, 32), 5, stride=1)[:, :, :28, :28]
    stem = WhiteningStem()
    stem.fit(images)
    outputs = stem(images)[:, :9]  # the positive half of the filters
    flat = outputs.permute(0, 2, 3, 1).reshape(-1, 9)
    covariance = torch.cov(flat.T)
    # Whitened: no correlation left, and every direction with variance well above the
    # eps regulariser (1e-2) scaled to about 1.
    variances = torch.diag(covariance)
    off_diagonal = covariance - torch.diag(variances)
    assert off_diagonal.abs().max() < 0.02 * variances.max()
    raw = torch.nn.functional.unfold(images, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 9)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(raw.T.double())).float()
    expected = eigenvalues / (eigenvalues + stem.eps)
    assert torch.allclose(variances.sort().values, expected.sort().values, atol=0.05)
    assert "weight" in dict(stem.named_buffers()) and not list(stem.parameters())


def test_a_model_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such"):
        load_model(tmp_path / "missing.safetensors")
    checkpoint_like = tmp_path / "c.safetensors"
    from fmnist.tensorfile import save_tensor_file

    save_tensor_file(checkpoint_like, {"x": torch.zeros(1)}, {"format": "something-else"})
    with pytest.raises(RunError, match="not an fmnist model file"):
        load_model(checkpoint_like)


@pytest.mark.parametrize("name", list_models())
def test_every_model_argument_is_typed_and_bounded(name: str) -> None:
    """Model files, configs and flags all reach the builders through the registry's checks:
    every argument has a type and (numbers) bounds, out-of-range values are refused before
    anything is built, and the model's outputs can be counted on the meta device."""
    from fmnist.models.registry import create_meta_model, model_arguments, output_width

    arguments = model_arguments(name)
    assert arguments, name
    for argument in arguments.values():
        assert argument.kind in (int, float, bool, str, tuple), argument
        if argument.kind in (int, float) or argument.kind is tuple:
            assert argument.bounds is not None, argument
            too_big = argument.bounds.high + 1
            if argument.kind is int:
                too_big = int(too_big)
            value = [too_big] * (argument.length or 1) if argument.kind is tuple else too_big
            with pytest.raises(ConfigError, match=f"{argument.name}"):
                create_model(name, **{argument.name: value})
            with pytest.raises(ConfigError, match=f"{argument.name}"):
                create_model(name, **{argument.name: "1"})
    meta = create_meta_model(name)
    assert all(tensor.is_meta for tensor in meta.state_dict().values())
    assert output_width(meta) == 10
    assert output_width(create_meta_model(name, num_classes=4)) == 4

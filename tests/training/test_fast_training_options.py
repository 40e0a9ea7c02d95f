"""The fast-training options from airbench's package and selective backprop: frozen
BatchNorm scales, BatchNorm momentum, identity-initialised convolutions, a logit scale,
a faster rate for biases, Lookahead, alternating flips, the triangle schedule,
selective backprop and the Muon optimizer. Each is checked for what it promises, and runs using them train,
save, reload and resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from resumed_run import whole_and_resumed
from torch import nn

from fmnist.augment import (
    AugmentConfig,
    alternating_flips,
    apply_view,
    augment_batch_with_views,
)
from fmnist.errors import ConfigError
from fmnist.models import create_model
from fmnist.models.saved import load_model
from fmnist.training import resolve_config, train
from fmnist.training.config import TrainConfig
from fmnist.training.lookahead import Lookahead
from fmnist.training.optimizer import make_optimizer, orthogonalized, set_learning_rate
from fmnist.training.schedule import scheduled_lr

PACKAGE = {
    "model_args.width_14": 8,
    "model_args.width_7": 16,
    "model_args.bn_learn_scale": False,
    "model_args.bn_momentum": 0.4,
    "model_args.identity_init": True,
    "model_args.logit_scale": 0.5,
    "bias_lr_scale": 8.0,
    "lookahead_every": 3,
    "schedule": "triangle",
    "augment.flip_alternate": True,
    "selective_keep": 0.5,
    "selective_after": 1,
}


def package_config(**overrides) -> TrainConfig:
    return resolve_config("fast", overrides={"epochs": 3, "batch_size": 32, "seed": 0, **overrides}, settings=PACKAGE)


def test_frozen_batchnorm_scales_stay_one_and_the_shifts_learn(tmp_path: Path, learnable_dir: Path) -> None:
    train(package_config(), tmp_path / "run", data=learnable_dir)
    model = load_model(tmp_path / "run").module
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert any(m.bias.abs().max() > 0 for m in norms)
    assert all(m.momentum == 0.4 for m in norms)


def test_identity_init_passes_each_input_channel_through() -> None:
    model = create_model("fast_cnn", width_14=24, width_7=16, identity_init=True)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    for conv in convs:
        channels = min(conv.in_channels, conv.out_channels)
        x = torch.rand(2, conv.in_channels, 7, 7)
        assert torch.allclose(conv(x)[:, :channels], x[:, :channels])
    # Filters past the identity part (24 out of 18 channels in) keep a random start.
    assert convs[0].in_channels == 18 and convs[0].weight[18:].abs().sum() > 0


def test_logit_scale_scales_the_outputs() -> None:
    torch.manual_seed(0)
    plain = create_model("fast_cnn", width_14=8, width_7=16)
    torch.manual_seed(0)
    scaled = create_model("fast_cnn", width_14=8, width_7=16, logit_scale=0.25)
    images = torch.rand(3, 1, 28, 28)
    plain.eval(), scaled.eval()
    assert torch.allclose(scaled(images), plain(images) * 0.25, atol=1e-6)


def test_bias_lr_scale_speeds_up_only_the_one_dimensional_parameters() -> None:
    config = TrainConfig(model="fast_cnn", optimizer="sgd", lr=0.1, schedule="constant", bias_lr_scale=16.0)
    model = create_model("fast_cnn", width_14=8, width_7=16)
    optimizer = make_optimizer(model, config)
    set_learning_rate(optimizer, config, step=0, total_steps=10, scale=1.0, epochs_done=0)
    for group in optimizer.param_groups:
        one_dim = all(p.ndim == 1 for p in group["params"])
        assert group["lr"] == pytest.approx(1.6 if one_dim else 0.1)
    # Without the option the groups keep their former layout (older checkpoints load).
    plain = make_optimizer(model, TrainConfig(model="fast_cnn", optimizer="sgd"))
    assert all("one_dim" not in group for group in plain.param_groups)


def test_triangle_schedule_matches_airbench() -> None:
    lr = [scheduled_lr("triangle", peak=1.0, step=s, total_steps=100, warmup_fraction=0.25) for s in (0, 25, 100)]
    assert lr == pytest.approx([0.2, 1.0, 0.07])
    middle = scheduled_lr("triangle", peak=1.0, step=62, total_steps=100, warmup_fraction=0.25)
    assert 0.07 < middle < 1.0


def test_lookahead_pulls_weights_to_the_slow_copy_and_ends_on_it() -> None:
    model = nn.Linear(3, 2)
    lookahead = Lookahead(model, every=2, total_steps=10)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.after_step(1)  # not a multiple of `every`: nothing happens
    assert torch.equal(model.weight, start["weight"] + 1)
    lookahead.after_step(2)
    decay = lookahead.decay(2)
    expected = start["weight"] * decay + (start["weight"] + 1) * (1 - decay)
    assert torch.allclose(model.weight, expected) and torch.allclose(lookahead.slow["weight"], expected)
    with torch.no_grad():
        model.weight.add_(5.0)
    lookahead.after_step(10)  # the last step: the weights become the slow copy
    assert torch.allclose(model.weight, expected)


def test_alternating_flips_show_each_image_both_ways_every_two_epochs() -> None:
    indices = torch.arange(10_000)
    even, odd = alternating_flips(indices, 0), alternating_flips(indices, 1)
    assert torch.equal(even, ~odd) and torch.equal(even, alternating_flips(indices, 2))
    assert 0.45 < even.float().mean() < 0.55
    config = AugmentConfig(rotate_degrees=0.0, shift_fraction=0.0, flip=True, flip_alternate=True, crop_padding=1)
    images = torch.rand(64, 1, 28, 28)
    batch = torch.randperm(10_000)[:64]
    augmented, views = augment_batch_with_views(images, config, generator=torch.Generator().manual_seed(0), indices=batch, epoch=3)
    flipped = views >= 9  # 9 crop windows, then the flip
    assert torch.equal(flipped, alternating_flips(batch, 3))
    for i in range(len(images)):
        assert torch.equal(augmented[i : i + 1], apply_view(images[i : i + 1], config, int(views[i])))


def test_flip_alternate_needs_flip() -> None:
    with pytest.raises(ConfigError, match="flip_alternate needs flip"):
        resolve_config("fast", settings={"augment.flip": False, "augment.flip_alternate": True, "tta_flip": False, "tta_shift": False})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bias_lr_scale": 0}, "bias_lr_scale must be in"),
        ({"lookahead_every": -1}, "lookahead_every must be"),
        ({"lookahead_every": 5, "ema_decay": 0.99}, "one weight average per run"),
        ({"selective_keep": 0}, "selective_keep must be in"),
        ({"selective_keep": 1.5}, "selective_keep must be in"),
        ({"selective_after": -1}, "selective_after must be"),
        ({"model_args.bn_momentum": 0}, "bn_momentum"),
        ({"model_args.logit_scale": 0}, "logit_scale"),
    ],
)
def test_out_of_range_options_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("fast", settings=settings)


def test_selective_backprop_backpropagates_the_hardest_share(tmp_path: Path, learnable_dir: Path, monkeypatch) -> None:
    from fmnist.models.fast_cnn import FastCNN

    sizes: list[tuple[bool, bool, int]] = []
    original = FastCNN.forward

    def recording(self, images):
        sizes.append((self.training, torch.is_grad_enabled(), images.shape[0]))
        return original(self, images)

    monkeypatch.setattr(FastCNN, "forward", recording)
    config = package_config(epochs=2, val_fraction=0.2)  # 320 training images: 10 batches of 32
    train(config, tmp_path / "run", data=learnable_dir)
    trained = [size for training, grad, size in sizes if training and grad]
    scored = [size for training, grad, size in sizes if not training and not grad and size == 32]
    assert trained[:10] == [32] * 10  # the first epoch trains on whole batches
    assert trained[10:20] == [16] * 10  # then on the hardest half
    assert len(scored) >= 10  # each of those batches scored first


def test_hardest_picks_the_highest_losses(tmp_path: Path) -> None:
    from fmnist.training.loop import Trainer

    class Fixed(nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.logits[images[:, 0, 0, 0].long()]

    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [1.0, 0.0], [0.0, 0.2]])
    labels = torch.tensor([0, 0, 1, 1])  # losses: small, large, large-ish, medium
    images = torch.arange(4.0).view(4, 1, 1, 1)
    trainer = Trainer.__new__(Trainer)
    trainer.model, trainer.autocast_dtype = Fixed(logits), None
    trainer.config = TrainConfig(selective_keep=0.5)
    trainer.context = type("Context", (), {"device": torch.device("cpu")})()
    _, chosen_labels, batch, _ = trainer._hardest(images, labels, torch.tensor([10, 11, 12, 13]), torch.zeros(4, dtype=torch.int64))
    expected = F.cross_entropy(logits, labels, reduction="none").topk(2).indices.sort().values
    assert batch.tolist() == (expected + 10).tolist() == [11, 12]
    assert chosen_labels.tolist() == [0, 1]


def test_a_run_with_every_option_resumes_to_the_same_weights(tmp_path: Path, learnable_dir: Path) -> None:
    whole, cut = whole_and_resumed(package_config(), tmp_path, learnable_dir)
    assert whole.keys() == cut.keys()
    assert all(torch.equal(whole[name], cut[name]) for name in whole)


@pytest.mark.parametrize("shape", [(32, 162), (64, 576), (40, 8)])
def test_orthogonalized_pushes_singular_values_near_one_and_keeps_the_directions(shape: tuple[int, int]) -> None:
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    result = orthogonalized(matrix)
    singular = torch.linalg.svdvals(result)
    assert result.shape == matrix.shape
    assert singular.min() > 0.6 and singular.max() < 1.25
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    polar = u @ vh  # the exact semi-orthogonal factor
    assert F.cosine_similarity(result.flatten(), polar.flatten(), dim=0) > 0.95


def muon_config(**overrides) -> TrainConfig:
    settings = {"optimizer": "muon", "muon_lr_scale": 0.5, "muon_momentum": 0.6, "model_args.width_14": 8, "model_args.width_7": 16}
    return resolve_config("fast", overrides={"epochs": 3, "batch_size": 32, "seed": 0, **overrides}, settings=settings)


def test_muon_takes_the_filters_and_sgd_the_rest() -> None:
    config = muon_config()
    model = create_model("fast_cnn", **config.model_args)
    optimizer = make_optimizer(model, config)
    set_learning_rate(optimizer, config, step=0, total_steps=10, scale=1.0, epochs_done=0)
    scheduled = scheduled_lr(config.schedule, peak=config.lr, step=0, total_steps=10, warmup_fraction=config.warmup_fraction)
    (muon,) = [group for group in optimizer.param_groups if group.get("orthogonal")]
    filters = [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
    assert [id(p) for p in muon["params"]] == [id(p) for p in filters] and len(filters) == 3
    assert muon["lr"] == pytest.approx(scheduled * 0.5) and muon["momentum"] == 0.6 and muon["weight_decay"] == 0
    others = [p for group in optimizer.param_groups if not group.get("orthogonal") for p in group["params"]]
    assert others and all(p.ndim != 4 for p in others)
    assert all(group["momentum"] == config.momentum for group in optimizer.param_groups if not group.get("orthogonal"))


def test_a_muon_step_is_the_orthogonalised_nesterov_update_of_the_rescaled_filters() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    config = TrainConfig(model="fast_cnn", optimizer="muon", lr=0.2, schedule="constant", muon_momentum=0.5)
    optimizer = make_optimizer(conv, config)
    set_learning_rate(optimizer, config, step=0, total_steps=10, scale=1.0, epochs_done=0)
    expected = conv.weight.detach().clone()
    buffer = None
    for _ in range(2):
        grad = torch.randn_like(conv.weight)
        conv.weight.grad, conv.bias.grad = grad.clone(), torch.zeros_like(conv.bias)
        buffer = grad if buffer is None else buffer * 0.5 + grad
        update = grad + 0.5 * buffer
        expected = expected * (2.0 / expected.norm())  # norm sqrt(4 out channels)
        expected = expected - 0.2 * orthogonalized(update.reshape(4, -1)).view_as(expected)
        optimizer.step()
        assert torch.allclose(conv.weight, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"optimizer": "muon", "muon_lr_scale": 0}, "muon_lr_scale must be in"), ({"muon_momentum": 1.0}, "muon_momentum must be in")],
)
def test_out_of_range_muon_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("fast", settings=settings)


def test_a_muon_run_learns_and_resumes_to_the_same_weights(tmp_path: Path, learnable_dir: Path) -> None:
    whole, cut = whole_and_resumed(muon_config(), tmp_path, learnable_dir)
    assert all(torch.equal(whole[name], cut[name]) for name in whole)
    record = [json.loads(line) for line in (tmp_path / "whole" / "epochs.jsonl").read_text().splitlines()][-1]
    assert record["val_accuracy"] > 0.5  # ten classes: chance is 0.1

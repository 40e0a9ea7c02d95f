"""The optimizer of a run and the learning rate of each of its steps."""

from __future__ import annotations

import math

import torch
from torch import nn

from fmnist.training.config import TrainConfig
from fmnist.training.schedule import scheduled_lr
from fmnist.training.transfer import lr_scale, parameter_groups


class PlainSGD:
    """SGD with momentum (Nesterov or not) and per-group weight decay, computed as
    torch.optim.SGD computes it with its foreach kernels, and with the same state_dict
    layout (checkpoints load either way), but without torch.optim's machinery: building a
    torch.optim optimizer imports torch._dynamo, 1.2 s of a 60-second default run's start
    on the reference CPU (README, "Results").

    A group marked ``orthogonal`` (optimizer="muon": the convolution filters) takes Muon's
    step instead, with the same momentum buffers in the state."""

    def __init__(self, groups: list[dict], *, lr: float, momentum: float, nesterov: bool) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": 0.0, "nesterov": nesterov}
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group.get("orthogonal", False):
                self._muon_step(group, params)
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            momentum = group["momentum"]
            if momentum:
                buffers = [self._momentum_buffer(p, grad, momentum, group["dampening"]) for p, grad in zip(params, grads)]
                grads = torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    def _momentum_buffer(self, p: torch.Tensor, grad: torch.Tensor, momentum: float, dampening: float = 0.0) -> torch.Tensor:
        buffer = self.state.get(p, {}).get("momentum_buffer")
        if buffer is None:  # the first step: the buffer starts as the gradient
            buffer = torch.clone(grad).detach()
            self.state[p] = {"momentum_buffer": buffer}
        else:
            buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
        return buffer

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        """Muon (Jordan et al., 2024, as airbench's CIFAR-10 runs use it): the momentum
        update of each filter bank, seen as an out_channels x fan_in matrix, replaced by
        the nearest semi-orthogonal matrix, so every direction of the update moves at the
        same rate. The bank is first rescaled to norm sqrt(out_channels): under the
        BatchNorm that follows every convolution of fast_cnn that changes nothing the
        network computes, and it stops the filters' growth from shrinking the step."""
        momentum = group["momentum"]
        for p in params:
            buffer = self._momentum_buffer(p, p.grad, momentum)
            update = p.grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
            p.mul_(math.sqrt(len(p)) / p.norm().clamp_min(1e-12))
            p.add_(orthogonalized(update.reshape(len(p), -1)).view_as(p), alpha=-group["lr"])

    def state_dict(self) -> dict:
        """torch.optim's layout: parameters numbered in group order."""
        index = {p: i for i, p in enumerate(self._params())}
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": list(range(start, start + count))})
            start += count
        state = {index[p]: {"momentum_buffer": values["momentum_buffer"]} for p, values in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        params = self._params()
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"]) for saved, group in zip(saved_groups, self.param_groups)
        ):
            raise ValueError("the saved optimizer state has other parameter groups than this model")
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({k: v for k, v in saved.items() if k != "params" and k in group})
        self.state = {}
        for key, values in state_dict["state"].items():
            buffer = values.get("momentum_buffer")
            if buffer is not None:
                p = params[int(key)]
                self.state[p] = {"momentum_buffer": buffer.to(device=p.device, dtype=p.dtype).clone()}


def orthogonalized(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """An approximation of U V^T for matrix = U S V^T (its singular values pushed to
    about 1) by the quintic Newton-Schulz iteration of Muon, whose coefficients trade an
    exact fixed point for speed: the singular values land in roughly [0.7, 1.2], which
    is all the step needs, in five iterations of small matrix products."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix.float()
    wide = x.shape[0] <= x.shape[1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # every singular value at most 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(matrix.dtype)


def make_optimizer(model: nn.Module, config: TrainConfig) -> PlainSGD | torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters (1-D tensors): decaying them only
    # fights the normalisation. Transfer settings split backbone and head (transfer.py).
    groups = parameter_groups(model, config)
    if config.optimizer in ("sgd", "muon"):
        return PlainSGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def set_learning_rate(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, step: int, total_steps: int, scale: float, epochs_done: int
) -> float:
    """Set every parameter group's rate for ``step`` (0-based) of ``total_steps``: the
    schedule's, times ``scale`` (the plateau scaler's), times the group's transfer share
    (0 for a frozen backbone). Returns the scheduled rate before the group's share."""
    lr = scheduled_lr(
        config.schedule, peak=config.lr, step=step, total_steps=total_steps, warmup_fraction=config.warmup_fraction
    ) * scale
    for group in optimizer.param_groups:
        group["lr"] = lr * lr_scale(group, config, epochs_done)
    return lr


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    full, rest = divmod(num_images, batch_size)
    # A final batch of one image is dropped: BatchNorm cannot normalise it.
    return full + (1 if rest > 1 else 0)

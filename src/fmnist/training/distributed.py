"""Data-parallel training on PyTorch's own engine: run under `torchrun`, one process per
rank, gradients averaged by DistributedDataParallel (gloo on CPU, NCCL on GPU).

Outside torchrun everything here degrades to a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from fmnist.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_objects(self, value: Any) -> list[Any]:
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)  # the config checked the spelling
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r}: no CUDA GPU is available to this PyTorch", "use --set device=cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {requested!r}: only {torch.cuda.device_count()} GPUs here", "use cuda:0 .. cuda:N-1")
    return device


def setup(requested_device: str) -> Distributed:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(requested_device)
    if world_size <= 1:
        return Distributed(device=device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def shutdown(context: Distributed) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()

"""Shared helpers for the benchmark scripts: provenance and this CPU's matmul peak."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

import fmnist
from fmnist.cpus import cpu_description
from fmnist.training.run_folder import git_dirty, git_revision


def provenance() -> dict:
    return {
        "fmnist": fmnist.__version__,
        "git_revision": git_revision(),
        "git_dirty": git_dirty(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def median_seconds(function: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def matmul_peak_flops(size: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of a large float32 matmul: the practical peak that models are compared to."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = median_seconds(lambda: torch.matmul(a, b), repeats=repeats, warmup=2)
    return 2 * size**3 / seconds

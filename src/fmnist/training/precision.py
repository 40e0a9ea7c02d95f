"""Mixed precision: bfloat16 autocast where the hardware computes in bfloat16 natively.

On CUDA, and on CPUs with AVX-512 BF16 or AMX (oneDNN's bfloat16 kernels), autocast runs
convolutions and matrix products in bfloat16 while the weights, the optimizer and the loss
stay float32. On the 2-core AVX-512 BF16 reference CPU this trains `fast_cnn` 1.3-1.75x
faster at batch 256 (benchmarks/train_throughput.py). Elsewhere on a CPU, bfloat16 is emulated
and slower, so autocast stays off.
"""

from __future__ import annotations

import contextlib

import torch


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes convolutions in bfloat16 natively."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype a run on ``device`` uses (None: plain float32)."""
    return torch.bfloat16 if enabled and native_bfloat16(device) else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (from ``autocast_dtype``, decided once per run);
    None runs in plain float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)

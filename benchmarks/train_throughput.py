"""Training throughput of each registered model on this CPU: images/s and % of matmul peak.

One training step = forward, backward and optimizer step on a batch of random images
(channels_last, as training does), under the autocast training uses: bfloat16 where the
CPU computes it natively (``--no-amp`` for float32, to see what it buys). Achieved FLOP/s
counts a step as 3x the forward FLOPs (the usual estimate: backward costs about twice the
forward). Prints JSON.

    python benchmarks/train_throughput.py [--models seed_cnn ...] [--batch-size 256] [--threads N] [--no-amp]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_flops, median_seconds, provenance

from fmnist.models import count_flops, count_parameters, create_model, list_models
from fmnist.training.precision import autocast, autocast_dtype

CPU = torch.device("cpu")


def training_throughput(name: str, batch_size: int, repeats: int, dtype: torch.dtype | None) -> dict:
    torch.manual_seed(0)
    model = create_model(name).to(memory_format=torch.channels_last)
    flops = count_flops(model)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    images = torch.rand(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        with autocast(CPU, dtype):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    steps = 5

    def several_steps() -> None:
        for _ in range(steps):
            step()

    seconds = median_seconds(several_steps, repeats=repeats, warmup=1) / steps
    images_per_second = batch_size / seconds
    return {
        "model": name,
        "parameters": count_parameters(model),
        "forward_flops_per_image": flops,
        "train_images_per_second": round(images_per_second, 1),
        "achieved_gflops": round(3 * flops * images_per_second / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-amp", action="store_true", help="float32 even where bfloat16 is native")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = autocast_dtype(CPU, not args.no_amp)
    peak = matmul_peak_flops()
    rows = []
    for name in args.models or list_models():
        row = training_throughput(name, args.batch_size, args.repeats, dtype)
        row["percent_of_matmul_peak"] = round(100 * row["achieved_gflops"] * 1e9 / peak, 1)
        rows.append(row)
    print(json.dumps({
        "benchmark": "train_throughput",
        "batch_size": args.batch_size,
        "autocast": str(dtype or "off"),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "models": rows,
        "provenance": provenance(),
    }, indent=2))


if __name__ == "__main__":
    main()

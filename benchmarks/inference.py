"""Inference speed of each registered model on this CPU: batch-1 latency and batch-1024
throughput (inference mode, channels_last, eval), beside FLOPs per image and the share of
this CPU's float32 matmul throughput they reach (a large torch.matmul, measured in the
same run). Prints JSON.

    python benchmarks/inference.py [--models fast_cnn ...] [--threads N] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_flops, median_seconds, provenance

from fmnist.models import count_flops, count_parameters, create_model, list_models


@torch.inference_mode()
def measure(name: str, repeats: int) -> dict:
    model = create_model(name).eval().to(memory_format=torch.channels_last)
    flops = count_flops(model)
    single = torch.rand(1, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    batch = torch.rand(1024, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    calls = 50

    def many_single() -> None:
        for _ in range(calls):
            model(single)

    latency = median_seconds(many_single, repeats=repeats, warmup=1) / calls
    batch_seconds = median_seconds(lambda: model(batch), repeats=repeats, warmup=1)
    throughput = 1024 / batch_seconds
    return {
        "model": name,
        "parameters": count_parameters(model),
        "flops_per_image": flops,
        "batch1_latency_ms": round(latency * 1000, 3),
        "batch1024_images_per_second": round(throughput, 1),
        "batch1024_achieved_gflops": round(flops * throughput / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak_flops()
    rows = []
    for name in args.models or list_models():
        row = measure(name, args.repeats)
        row["batch1024_percent_of_matmul_peak"] = round(100 * row["batch1024_achieved_gflops"] * 1e9 / peak, 1)
        rows.append(row)
    print(json.dumps({"benchmark": "inference", "matmul_peak_gflops": round(peak / 1e9, 1), "models": rows, "provenance": provenance()}, indent=2))


if __name__ == "__main__":
    main()

"""PyTorch against ONNX Runtime in one process, on the same model and the same images:
batch-1 latency (median over calls) and batch-1024 throughput (median over repeats).

Each backend goes through the fmnist.inference Predictor, so the figures include what a
caller pays: uint8 -> float conversion, the model, test-time flip when the model card asks
for it, temperature and softmax. The ONNX model is exported (and checked against PyTorch)
into a temporary folder first. Prints JSON.

    python benchmarks/inference_backends.py RUN_DIR [--threads 1] [--repeats 7] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, provenance

from fmnist.export import export_model
from fmnist.inference import load_predictor

SINGLE_CALLS = 200  # batch-1 calls per timed repeat


def measure(predictor, images: np.ndarray, repeats: int) -> dict:
    single = images[:1]

    def many_single() -> None:
        for _ in range(SINGLE_CALLS):
            predictor.probabilities(single)

    latency = median_seconds(many_single, repeats=repeats, warmup=1) / SINGLE_CALLS
    batch = images[:1024]
    batch_seconds = median_seconds(lambda: predictor.probabilities(batch), repeats=repeats, warmup=1)
    return {
        "backend": predictor.backend,
        "batch1_latency_ms": round(latency * 1000, 3),
        "batch1024_images_per_second": round(len(batch) / batch_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder or model file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data", default=None, help="dataset for the export's parity check (default: search)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Random pixels: these dense models do the same work whatever the image shows.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1024, 28, 28), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as folder:
        onnx_path = Path(folder) / "model.onnx"
        export = export_model(args.run, onnx_path, fmt="onnx", data=args.data)
        predictors = [
            load_predictor(args.run, backend="torch", threads=args.threads),
            load_predictor(onnx_path, backend="onnxruntime", threads=args.threads),
        ]
        rows = [measure(predictor, images, args.repeats) for predictor in predictors]
    torch_row, onnx_row = rows
    print(
        json.dumps(
            {
                "benchmark": "inference_backends",
                "run": str(Path(args.run).resolve()),
                "threads": args.threads,
                "repeats": args.repeats,
                "tta_flip": predictors[0].tta_flip,
                "tta_shift": predictors[0].tta_shift,
                "parity_max_probability_difference": export.max_probability_difference,
                "results": rows,
                "onnxruntime_vs_torch": {
                    "latency_ratio": round(torch_row["batch1_latency_ms"] / onnx_row["batch1_latency_ms"], 2),
                    "throughput_ratio": round(
                        onnx_row["batch1024_images_per_second"] / torch_row["batch1024_images_per_second"], 2
                    ),
                },
                "provenance": {**provenance(), "onnxruntime": __import__("onnxruntime").__version__},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

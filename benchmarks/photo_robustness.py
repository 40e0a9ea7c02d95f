"""Accuracy on photo-like renderings of the test set against accuracy on the originals.

Each test image is rendered as a user's photo would arrive (upscaled, inverted to a dark
garment on a 215-255 grey background, padded off-centre, RGB JPEG; see
fmnist.inference.photo_like), read back through ``prepare_photo`` and classified. The
test split is only measured here: nothing is chosen from these figures. Prints JSON.

    python benchmarks/photo_robustness.py RUN_DIR [--data PATH] [--limit N] [--scale 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance

from fmnist.data import load
from fmnist.inference import load_predictor
from fmnist.inference.photo_like import photo_robustness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder or model file")
    parser.add_argument("--data", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10,000)")
    parser.add_argument("--scale", type=int, default=None, help="upscaling factor (default: random 4-8 per image)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    test = load("test", args.data, progress=False)
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    predictor = load_predictor(args.run)
    started = time.perf_counter()
    result = photo_robustness(predictor, images, labels, seed=args.seed, scale=args.scale)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "benchmark": "photo_robustness",
                "run": str(Path(args.run).resolve()),
                "scale": args.scale or "random 4-8",
                "seed": args.seed,
                **asdict(result),
                "drop_points": result.drop_points,
                "seconds": round(seconds, 1),
                "provenance": provenance(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

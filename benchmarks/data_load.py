"""Data-load times: IDX parse (cold cache), cached reload, Kaggle CSV parse.

Each measurement runs in a fresh Python process so nothing stays warm in memory
between them (the OS page cache does stay warm, as it would for a user). Prints JSON.

    python benchmarks/data_load.py [--data PATH] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance

CHILD = """
import sys, time, json
started = time.perf_counter()
from fmnist.data import load_split
imported = time.perf_counter()
train = load_split("train", sys.argv[1] if sys.argv[1] != "-" else None)
test = load_split("test", sys.argv[1] if sys.argv[1] != "-" else None)
done = time.perf_counter()
print(json.dumps({"load_s": done - imported, "images": len(train[0]) + len(test[0])}))
"""


def measure(data: str, cache: Path) -> dict:
    env = {**__import__("os").environ, "FMNIST_CACHE": str(cache)}
    output = subprocess.run([sys.executable, "-c", CHILD, data], env=env, capture_output=True, text=True, check=True)
    return json.loads(output.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="-", help="IDX folder (default: the normal search)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"idx_cold_s": [], "cached_s": [], "csv_cold_s": []}
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        csv_dir = scratch_path / "csv"
        subprocess.run(
            [sys.executable, "-m", "fmnist", "data", "export-csv", str(csv_dir)]
            + ([] if args.data == "-" else ["--data", args.data]),
            check=True, capture_output=True,
        )
        images = 0
        for repeat in range(args.repeats):
            cache = scratch_path / f"cache-{repeat}"
            cold = measure(args.data, cache)
            images = cold["images"]
            results["idx_cold_s"].append(cold["load_s"])
            results["cached_s"].append(measure(args.data, cache)["load_s"])
            results["csv_cold_s"].append(measure(str(csv_dir), scratch_path / f"csv-cache-{repeat}")["load_s"])
    report = {
        "benchmark": "data_load",
        "images": images,
        "what": "seconds to load train+test (70,000 images) in a fresh process, import excluded",
        **{f"{name}_median": round(statistics.median(values), 4) for name, values in results.items()},
        "runs": {name: [round(v, 4) for v in values] for name, values in results.items()},
        "provenance": provenance(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

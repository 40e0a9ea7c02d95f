"""Time to accuracy: wall seconds from process start until test accuracy first reaches
92/93/94/95%, plus final accuracy, epochs and peak memory, over several seeds.

Each seed trains in a fresh process. The clock starts just before that process is
launched, so interpreter start-up, imports and data loading count. At every epoch end
the test accuracy of the current weights is measured for this benchmark only: that time
is taken off the clock and the result never reaches training (which sees the training
split alone). Prints JSON: medians and per-seed figures.

    python benchmarks/time_to_accuracy.py --recipe fast --seeds 3 [--data PATH] [--set key=value ...]

Slow recipes can measure every Nth epoch (``--eval-every N``; the last epoch always):
the times to each threshold are then those of the first *measured* epoch past it, an
upper bound. ``--keep DIR`` keeps each seed's run folder (DIR/seed<N>) for later use,
e.g. ``fmnist ensemble``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance

THRESHOLDS = (0.92, 0.93, 0.94, 0.95)

CHILD = r"""
import json, resource, sys, time
launched = float(sys.argv[1])
paused = 0.0
from fmnist.data import load
from fmnist.evaluation.predictions import predict
from fmnist.inference.predictor import TorchPredictor
from fmnist.training import resolve_config, train
settings = json.loads(sys.argv[2])
config = resolve_config(settings.pop("recipe"), overrides=settings.pop("overrides"), settings=settings.pop("settings"))
data = settings.pop("data")
settings.setdefault("eval_every", 1)
pause_started = time.time()
test = load("test", data)
paused += time.time() - pause_started
epochs = []

def on_epoch(end):
    global paused
    if end.record["epoch"] % settings["eval_every"] and end.record["epoch"] != end.config.epochs:
        return
    pause_started = time.time()
    elapsed = pause_started - launched - paused
    accuracy = predict(TorchPredictor.of_module(end.model, tta_flip=end.config.tta_flip, tta_shift=end.config.tta_shift), test.images, test.labels).accuracy()
    epochs.append({"epoch": end.record["epoch"], "seconds": round(elapsed, 2), "test_accuracy": float(accuracy),
                   "val_accuracy": end.record["val_accuracy"]})
    paused += time.time() - pause_started

result = train(config, sys.argv[3], data=data, on_epoch=on_epoch)
finished = time.time() - launched - paused
final = predict(TorchPredictor.of_module(result.model, tta_flip=config.tta_flip, tta_shift=config.tta_shift), test.images, test.labels).accuracy()
print(json.dumps({"epochs": epochs, "final_test_accuracy": final, "best_epoch": result.best_epoch,
                  "train_seconds": round(finished, 2),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def run_seed(recipe: str, seed: int, overrides: dict, data: str | None, eval_every: int = 1,
             keep: Path | None = None) -> dict:
    # ``overrides``: `fmnist train --set` settings (dotted keys for nested fields).
    settings = {"recipe": recipe, "overrides": {"seed": seed}, "settings": overrides, "data": data, "eval_every": eval_every}
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = keep / f"seed{seed}" if keep else Path(scratch) / "run"
        launched = time.time()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, repr(launched), json.dumps(settings), str(run_dir)],
            capture_output=True, text=True, env=os.environ.copy(), check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seed"] = seed
    for threshold in THRESHOLDS:
        reached = next((e["seconds"] for e in result["epochs"] if e["test_accuracy"] >= threshold), None)
        result[f"seconds_to_{round(threshold * 100)}"] = reached
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--eval-every", type=int, default=1, help="measure test accuracy every Nth epoch")
    parser.add_argument("--keep", type=Path, default=None, help="keep each seed's run folder under this folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings as fmnist train --set reads them, e.g. epochs=4 augment.flip=true")
    args = parser.parse_args()
    from fmnist.training.config import (
        parse_setting,  # as `fmnist train --set` reads them
    )

    overrides = dict(parse_setting(item) for item in args.set)
    runs = [run_seed(args.recipe, seed, overrides, args.data, args.eval_every, args.keep) for seed in range(args.first_seed, args.first_seed + args.seeds)]
    summary = {}
    for threshold in THRESHOLDS:
        key = f"seconds_to_{round(threshold * 100)}"
        times = [run[key] for run in runs]
        summary[f"median_{key}"] = statistics.median(times) if all(t is not None for t in times) else None
        summary[f"{key}_reached"] = f"{sum(t is not None for t in times)}/{len(times)} seeds"
    finals = [run["final_test_accuracy"] for run in runs]
    summary["final_test_accuracy_mean"] = statistics.mean(finals)
    summary["final_test_accuracy_std"] = statistics.stdev(finals) if len(finals) > 1 else 0.0
    summary["median_train_seconds"] = statistics.median(run["train_seconds"] for run in runs)
    summary["max_peak_rss_mib"] = max(run["peak_rss_mib"] for run in runs)
    print(json.dumps({
        "benchmark": "time_to_accuracy",
        "recipe": args.recipe,
        "overrides": overrides,
        "eval_every": args.eval_every,
        "clock": "wall seconds from process launch, test evaluations excluded",
        **summary,
        "runs": runs,
        "provenance": provenance(),
    }, indent=2))


if __name__ == "__main__":
    main()

"""Load test of `fmnist serve` over loopback HTTP: N concurrent keep-alive clients, each
sending one-image POST /v1/predict requests back to back for a fixed duration. Prints
JSON: throughput (predictions/s), latency percentiles (client-side, from the first byte
sent to the last byte of the reply), errors, the server's mean batch size (from /metrics)
and the server's resident memory before and after.

    # start a server (with `fmnist serve` arguments after --serve-args) and load it:
    python benchmarks/serve_load.py --model RUN_DIR [--clients 64] [--duration 10] \
        [--serve-args --threads 1 --max-wait-ms 2]
    # or load a server that is already running (give --pid for its memory):
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 [--pid PID]
    # with a share of bad uploads (text files: each must be answered 415, anything else is an error):
    python benchmarks/serve_load.py --model RUN_DIR --bad-fraction 0.1

Requests carry 28x28 PNGs of training images (the test split is kept for measuring models).
The client is one asyncio process with raw HTTP/1.1, so it costs little CPU beside the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance


def request_bytes(host: str, port: int, png: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    found = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if found is None:
        raise ValueError("reply without Content-Length")
    length = int(found.group(1))
    return status, await reader.readexactly(length)


async def client(
    host: str, port: int, requests: list[bytes], seed: int, stop_at: float, warm_until: float, results: dict,
    bad: bytes | None = None, bad_fraction: float = 0.0,
) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    reader = writer = None
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            refused = bad is not None and rng.random() < bad_fraction
            payload = bad if refused else requests[int(rng.integers(len(requests)))]
            started = time.perf_counter()  # connecting is not part of a request's latency
            writer.write(payload)
            status, _ = await read_reply(reader)
            finished = time.perf_counter()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            if started >= warm_until:
                results["errors"][type(error).__name__] = results["errors"].get(type(error).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        if started < warm_until:
            continue
        if refused and status == 415:
            results["refused"] += 1
        elif status == 200 and not refused:
            results["latencies"].append(finished - started)
        else:
            results["errors"][f"HTTP {status}"] = results["errors"].get(f"HTTP {status}", 0) + 1
    if writer is not None:
        writer.close()


async def load(
    host: str, port: int, requests: list[bytes], *, clients: int, duration: float, warmup: float,
    bad: bytes | None = None, bad_fraction: float = 0.0,
) -> dict:  # fmt: skip
    results = {"latencies": [], "errors": {}, "refused": 0}
    warm_until = time.perf_counter() + warmup
    stop_at = warm_until + duration
    await asyncio.gather(
        *(client(host, port, requests, seed, stop_at, warm_until, results, bad, bad_fraction) for seed in range(clients))
    )
    return results


def run_event_loop(coroutine):
    """asyncio.run on uvloop where it is installed (the serve extra brings it): the
    clients then cost less CPU on the cores they share with the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the worker processes of `fmnist serve --workers N`)."""
    tree, index = [pid], 0
    while index < len(tree):
        children = Path(f"/proc/{tree[index]}/task/{tree[index]}/children")
        if children.exists():
            tree.extend(int(child) for child in children.read_text().split())
        index += 1
    return tree


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of ``pid`` and all its descendants together."""
    if pid is None:
        return None
    total_kib = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except FileNotFoundError:  # ended meanwhile
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total_kib / 1024, 1)


def batch_stats(url: str) -> tuple[float, float]:
    """(forward passes, images) so far, from the server's Prometheus metrics."""
    text = urlopen(url + "/metrics", timeout=10).read().decode()
    count = float(re.search(r"^fmnist_batch_size_count (\S+)$", text, re.MULTILINE).group(1))
    total = float(re.search(r"^fmnist_batch_size_sum (\S+)$", text, re.MULTILINE).group(1))
    return count, total


def workers_of(serve_args: list[str]) -> int:
    """The --workers count among `fmnist serve` arguments (1 when not given)."""
    for index, argument in enumerate(serve_args):
        if argument == "--workers" and index + 1 < len(serve_args):
            return int(serve_args[index + 1])
        if argument.startswith("--workers="):
            return int(argument.split("=", 1)[1])
    return 1


def wait_until_ready(url: str, workers: int, deadline: float) -> bool:
    """Until ``workers`` distinct processes have answered /readyz. Each worker accepts
    connections once its model is loaded, and keep-alive clients stay where they first
    connected: starting the load before every worker is up would pile them all on one."""
    ready = set()
    while time.monotonic() < deadline:
        try:
            with urlopen(url + "/readyz", timeout=5) as reply:  # a new connection each time
                if reply.status == 200:
                    ready.add(json.loads(reply.read()).get("pid"))
        except OSError:
            pass
        if len(ready) >= workers:
            return True
        time.sleep(0.05)
    return False


def start_server(model: str, serve_args: list[str]) -> tuple[subprocess.Popen, str, Path]:
    log = Path(tempfile.mkstemp(prefix="serve_load-", suffix=".log")[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "fmnist", "serve", model, "--port", "0", *serve_args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"on (http://[\d.]+:\d+)/", log.read_text())
        if found:
            url = found.group(1)
            if wait_until_ready(url, workers_of(serve_args), deadline):
                return process, url, log
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start: {log.read_text()}")


def training_pngs(count: int, data: str | None) -> list[bytes]:
    import io

    from PIL import Image

    from fmnist.data import load_split

    images, _ = load_split("train", data)
    pngs = []
    for image in images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="start `fmnist serve MODEL` on a free loopback port")
    target.add_argument("--url", help="load this running server instead, e.g. http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load not measured")
    parser.add_argument("--images", type=int, default=256, help="distinct training images sent")
    parser.add_argument("--data", help="dataset folder (default: the usual search)")
    parser.add_argument("--bad-fraction", type=float, default=0.0, help="share of requests that upload a text file (expect 415)")
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[], help="passed to `fmnist serve`")
    args = parser.parse_args()

    process = log = None
    if args.model:
        process, url, log = start_server(args.model, args.serve_args)
        pid = process.pid
    else:
        url, pid = args.url.rstrip("/"), args.pid
    parts = urlsplit(url)
    try:
        requests = [request_bytes(parts.hostname, parts.port, png) for png in training_pngs(args.images, args.data)]
        bad = request_bytes(parts.hostname, parts.port, b"this is not an image\n" * 20)
        rss_before = rss_mib(pid)
        batches_before = batch_stats(url)
        results = run_event_loop(
            load(
                parts.hostname,
                parts.port,
                requests,
                clients=args.clients,
                duration=args.duration,
                warmup=args.warmup,
                bad=bad,
                bad_fraction=args.bad_fraction,
            )
        )
        batches_after = batch_stats(url)
        rss_after = rss_mib(pid)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    latencies = np.array(results["latencies"]) * 1000
    forward_passes = batches_after[0] - batches_before[0]
    report = {
        "benchmark": "serve_load",
        "url": url,
        "server_args": args.serve_args if args.model else None,
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "images_per_request": 1,
        "requests_ok": len(latencies),
        "bad_fraction": args.bad_fraction,
        "requests_refused_as_expected": results["refused"],
        "errors": sum(results["errors"].values()),
        "errors_by_kind": results["errors"],
        "throughput_predictions_per_s": round(len(latencies) / args.duration, 1),
        "latency_ms": {
            name: round(float(np.percentile(latencies, q)), 2) if len(latencies) else None
            for name, q in (("p50", 50), ("p95", 95), ("p99", 99))
        }
        | {"max": round(float(latencies.max()), 2) if len(latencies) else None},
        "server_mean_batch_size": round((batches_after[1] - batches_before[1]) / forward_passes, 2) if forward_passes else None,
        "server_rss_mib_before": rss_before,
        "server_rss_mib_after": rss_after,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "provenance": provenance(),
    }
    print(json.dumps(report, indent=2))
    if log is not None:
        log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

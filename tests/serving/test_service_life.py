"""What already held and must keep holding: a short soak with bad uploads (no errors, no
memory growth; benchmarks/serve_load.py runs the long version), a killed worker is
replaced, and SIGTERM lets in-flight requests finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_server import LiveServer, learnable_images, multipart, png

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


@pytest.mark.slow  # two servers under 10 s of load each
@pytest.mark.parametrize("serve_args", [[], ["--workers", "2"]], ids=["one-process", "two-workers"])
def test_short_soak_with_bad_uploads_has_no_errors_and_no_memory_growth(tiny_run, serve_args):
    """16 clients for 10 s, 10% of the uploads text files (415): every other reply is a 200,
    and the server's resident memory grows by less than 50 MB."""
    result = subprocess.run(
        [
            sys.executable, str(BENCHMARK), "--model", str(tiny_run), "--clients", "16", "--duration", "10",
            "--warmup", "2", "--images", "64", "--data", str(tiny_run.parent / "data"), "--bad-fraction", "0.1",
            "--serve-args", "--threads", "1", *serve_args,
        ],
        check=False, capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["requests_ok"] > 100 and report["requests_refused_as_expected"] > 10, report
    assert report["server_rss_mib_after"] - report["server_rss_mib_before"] < 50, report


def _workers(live: LiveServer, count: int, timeout: float = 60) -> set[int]:
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        try:
            reply = live.request("GET", "/readyz")
        except OSError:
            continue
        if reply.status == 200:
            seen.add(reply.json()["pid"])
    return seen


@pytest.mark.slow  # a third worker process starts and loads the model
def test_a_killed_worker_is_replaced(tiny_run, tmp_path):
    live = LiveServer(tiny_run, "--workers", "2", log=tmp_path / "server.log")
    try:
        workers = _workers(live, 2)
        assert len(workers) == 2, workers
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        replaced, deadline = set(), time.monotonic() + 90
        while time.monotonic() < deadline and not (replaced - workers):
            replaced |= _workers(live, 2, timeout=5)
        assert replaced - workers, "no new worker answered after one was killed"
        assert live.request("GET", "/healthz").status == 200
    finally:
        returncode = live.stop()
    assert returncode == 0, live.log.read_text()


def test_sigterm_lets_a_request_in_flight_finish(tiny_run, tmp_path):
    """A request whose body is half sent when SIGTERM arrives still gets its 200; then the
    server exits with 0 and accepts no more connections."""
    live = LiveServer(tiny_run, log=tmp_path / "server.log")
    images, _ = learnable_images(tiny_run)
    body, content_type = multipart([("file", "a.png", png(images[0]))])
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    try:
        with socket.create_connection((live.host, live.port), timeout=30) as sock:
            sock.sendall(head.encode() + body[:20])
            time.sleep(0.3)
            live.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[20:])
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["predictions"][0]["filename"] == "a.png"
    finally:
        returncode = live.stop()
    assert returncode == 0, live.log.read_text()
    with pytest.raises(OSError):
        socket.create_connection((live.host, live.port), timeout=2).close()

"""`fmnist serve --workers N`: several processes on one port, one set of metrics."""

from __future__ import annotations

import os
import time
from pathlib import Path

from live_server import LiveServer, learnable_images, png

from fmnist.inference.predictor import load_predictor


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_answer_on_one_port_and_add_up_their_metrics(tiny_run: Path, tmp_path: Path) -> None:
    live = LiveServer(tiny_run, "--workers", "2", log=tmp_path / "server.log")
    try:
        # Each new connection goes to whichever worker accepts it: both show up.
        workers, deadline = set(), time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            reply = live.request("GET", "/readyz")
            if reply.status == 200:
                workers.add(reply.json()["pid"])
        assert len(workers) == 2 and live.process.pid not in workers, workers

        images, _ = learnable_images(tiny_run)
        expected = load_predictor(tiny_run).predict(images[:3])
        for _ in range(3):  # three requests of three images, spread over the workers
            reply = live.predict([("file", f"{index}.png", png(images[index])) for index in range(3)])
            assert reply.status == 200, reply.body
            assert [p["label"] for p in reply.json()["predictions"]] == [p.label for p in expected]
        # Whichever worker renders /metrics counts the predictions of both.
        assert live.metrics()["fmnist_predictions_total"] == 9
    finally:
        returncode = live.stop()
    log = live.log.read_text()
    assert returncode == 0, log
    assert "Traceback" not in log, log
    assert not any(_alive(pid) for pid in workers), "workers left running after SIGTERM"

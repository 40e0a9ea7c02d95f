"""A real server with small limits, shared by the server tests."""

from __future__ import annotations

import pytest
from live_server import LiveServer

LIMIT_OPTIONS = ("--max-upload-mb", "1", "--max-files", "4", "--max-pixels", "250000", "--max-wait-ms", "20")


@pytest.fixture(scope="session")
def server(tiny_run, tmp_path_factory):
    """`fmnist serve` on the tiny run: 1 MB uploads, 4 files, 250,000 pixels per image, and a
    20 ms batching window so that concurrent test requests share forward passes. Its exit
    status after SIGTERM and its log are checked when the session ends."""
    live = LiveServer(tiny_run, *LIMIT_OPTIONS, log=tmp_path_factory.mktemp("server") / "server.log")
    yield live
    returncode = live.stop()
    log = live.log.read_text()
    assert returncode == 0, log
    assert "Traceback" not in log, log

"""A served model whose outputs turn NaN on some input (after its load-time check passed)
gets a JSON 500 that names the problem: no NaN in a reply, no traceback in the log."""

from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from live_server import Reply, multipart, png
from stub_predictors import NaNOnSecondImage

from fmnist.serving.app import ServeSettings, create_app


@pytest.fixture
def served(caplog: pytest.LogCaptureFixture):
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(ServeSettings(model="nan.model", max_wait_ms=50), predictor=NaNOnSecondImage())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(10)


def _post(port: int, count: int) -> Reply:
    import http.client

    image = png(np.full((28, 28), 90, np.uint8))
    body, content_type = multipart([("file", f"{i}.png", image) for i in range(count)])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def test_non_finite_outputs_are_a_named_500_without_a_traceback(served: int, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.ERROR, logger="fmnist")
    assert _post(served, 1).status == 200
    reply = _post(served, 2)
    assert reply.status == 500
    assert b"NaN" not in reply.body.replace(b"NaN or infinite", b"")  # the message may say so; no value is NaN
    document = reply.json()
    assert "outputs are NaN or infinite" in document["error"]
    assert document["fix"]
    assert not any(record.exc_info for record in caplog.records), "the model's fault was logged with a traceback"
    assert _post(served, 1).status == 200  # the service stays up

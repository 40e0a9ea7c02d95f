"""A real `fmnist serve` process on a free loopback port, and a small HTTP client for it.

Shared by the server tests (tests/serving) and the browser tests (tests/e2e).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body from (field, filename, content) parts; and its Content-Type.

    A part with filename "" is sent as a text field."""
    boundary = uuid.uuid4().hex
    chunks = []
    for field, filename, content in files:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n")
        if filename:
            chunks.append("Content-Type: application/octet-stream\r\n")
        chunks.append("\r\n")
        chunks.append(content)
        chunks.append("\r\n")
    chunks.append(f"--{boundary}--\r\n")
    body = b"".join(chunk.encode() if isinstance(chunk, str) else chunk for chunk in chunks)
    return body, f"multipart/form-data; boundary={boundary}"


class LiveServer:
    """``python -m fmnist serve MODEL --port 0 ...`` started and stopped by a test."""

    def __init__(self, model: Path, *options: str, log: Path, env: dict | None = None, preexec_fn=None) -> None:
        """``env`` adds to the environment; ``preexec_fn`` runs in the child before it starts
        (resource limits)."""
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop(); a file, not a pipe, never blocks the server
        env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fmnist", "serve", str(model), "--port", "0", "--threads", "1", *options],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only resource limits, set before the server starts
        )
        try:
            self.host, self.port = "127.0.0.1", self._wait_for_port()
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that did not come up is not left running
            raise

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _wait_for_port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rb"on http://127\.0\.0\.1:(\d+)/", self.log.read_bytes())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"fmnist serve exited with {self.process.returncode}: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"fmnist serve did not start: {self.log.read_text()}")

    def _wait_ready(self, timeout: float = 90) -> None:  # spawned workers import torch: slow on a busy machine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/readyz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"/readyz never answered 200: {self.log.read_text()}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def predict(self, files: list[tuple[str, str, bytes]], query: str = "") -> Reply:
        body, content_type = multipart(files)
        return self.request("POST", "/v1/predict" + query, body, {"Content-Type": content_type})

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as {'name{labels}': value}."""
        samples = {}
        for line in self.request("GET", "/metrics").body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log_file.close()


def png(image: np.ndarray | Image.Image) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def learnable_images(tiny_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The tiny run's own test images (dataset-style 28x28) and labels."""
    from fmnist.data import load_split

    return load_split("test", tiny_run.parent / "data")


def preview_pixels(prediction: dict) -> np.ndarray:
    """The uint8 (28, 28) image a prediction's ``image`` (PNG data URL, ?preview=1) shows."""
    encoded = prediction["image"].split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))

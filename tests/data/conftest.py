"""Fixtures for the data tests: no system copy, no internet, a real local HTTP mirror."""

from __future__ import annotations

import http.server
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from local_http import serving


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def unreachable_url() -> str:
    return closed_port_url()


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No system copy, and any download attempt goes to a closed local port, never the internet."""
    monkeypatch.setenv("FMNIST_SYSTEM_DATA", str(tmp_path / "no-system-data"))
    monkeypatch.setenv("FMNIST_MIRROR", closed_port_url())
    # A refused connection is retried with backoff: milliseconds here, not seconds.
    monkeypatch.setenv("FMNIST_DOWNLOAD_BACKOFF_S", "0.001")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Mirror:
    """A folder served over HTTP on 127.0.0.1, recording the paths requested."""

    folder: Path
    url: str
    requests: list[str] = field(default_factory=list)
    # Names whose reply announces the full Content-Length but sends only half the body.
    cut_short: set[str] = field(default_factory=set)
    # Names whose reply has no Content-Length: the body ends when the connection closes.
    unannounced: set[str] = field(default_factory=set)


def _handler(mirror: Mirror) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(mirror.folder), **kwargs)

        def do_GET(self) -> None:
            mirror.requests.append(self.path)
            name = self.path.lstrip("/")
            if name not in mirror.cut_short and name not in mirror.unannounced:
                super().do_GET()
                return
            body = (mirror.folder / name).read_bytes()
            self.send_response(200)
            if name in mirror.cut_short:
                self.send_header("Content-Length", str(len(body)))
                body = body[: len(body) // 2]
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real HTTP server on 127.0.0.1 serving an (initially empty) folder; FMNIST_MIRROR points at it."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    served = Mirror(folder=folder, url="")
    with serving(_handler(served)) as served.url:
        monkeypatch.setenv("FMNIST_MIRROR", served.url)
        yield served

"""Downloads retry transient failures with backoff, against a real HTTP server on 127.0.0.1
that fails its first requests (regression: one refused connection, a 503 or a dropped
connection failed the download at once).

The backoff is set to a few milliseconds here (FMNIST_DOWNLOAD_BACKOFF_S), except where
the waits themselves are checked.
"""

from __future__ import annotations

import http.server
import time
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pytest
from local_http import serving

from fmnist.data import cache_data_dir
from fmnist.data.download import ATTEMPTS, download_official, is_verified_copy
from fmnist.data.official import OFFICIAL_FILES
from fmnist.errors import DataError

NAMES = [official.name for official in OFFICIAL_FILES]
SMALL = "t10k-labels-idx1-ubyte.gz"  # 5 kB: the file the failures are staged on


@dataclass
class FlakyMirror:
    """Serves the real files; the first requests of a name get the staged failures, in order:
    an HTTP status (int), "drop" (close the connection without an answer) or "cut" (announce
    the full length, send half)."""

    real: Path
    url: str = ""
    staged: dict[str, list] = field(default_factory=dict)
    retry_after: str | None = None  # Retry-After header sent with staged statuses
    requests: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # name -> monotonic times


def _handler(mirror: FlakyMirror) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            mirror.requests[name].append(time.monotonic())
            failures = mirror.staged.get(name, [])
            failure = failures.pop(0) if failures else None
            if failure == "drop":
                self.close_connection = True
                return  # nothing sent: the client sees the connection closed
            path = mirror.real / name
            if isinstance(failure, int) or not path.is_file():
                self.send_response(failure if isinstance(failure, int) else 404)
                if mirror.retry_after is not None:
                    self.send_header("Retry-After", mirror.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if failure == "cut" else body)
            if failure == "cut":
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def flaky(real_fmnist_dir: Path, monkeypatch: pytest.MonkeyPatch):
    mirror = FlakyMirror(real=real_fmnist_dir)
    with serving(_handler(mirror)) as mirror.url:
        monkeypatch.setenv("FMNIST_MIRROR", mirror.url)
        monkeypatch.setenv("FMNIST_DOWNLOAD_BACKOFF_S", "0.001")
        yield mirror


def download() -> list[str]:
    return download_official(cache_data_dir(), progress=False)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".") or path.suffix == ".tmp")


@pytest.mark.parametrize(
    "failures",
    [[503, 503], [500], [502, 504], [429], [408], ["drop"], ["cut"], ["drop", 503, "cut"]],
    ids=lambda failures: "-".join(map(str, failures)),
)
def test_transient_failures_are_retried_then_the_download_succeeds(flaky: FlakyMirror, failures: list):
    flaky.staged[SMALL] = list(failures)

    actions = download()

    assert actions == [f"{name}: downloaded from {flaky.url}" for name in NAMES]
    assert len(flaky.requests[SMALL]) == len(failures) + 1
    assert all(len(flaky.requests[name]) == 1 for name in NAMES if name != SMALL)
    official = next(o for o in OFFICIAL_FILES if o.name == SMALL)
    assert is_verified_copy(cache_data_dir() / SMALL, official)
    assert leftovers(cache_data_dir()) == []


@pytest.mark.parametrize("status", [404, 403, 400])
def test_a_definite_refusal_is_not_retried(flaky: FlakyMirror, status: int):
    flaky.staged[NAMES[0]] = [status] * ATTEMPTS

    with pytest.raises(DataError, match="no Fashion-MNIST data found and it could not be downloaded"):
        download()

    assert len(flaky.requests[NAMES[0]]) == 1


def test_a_lasting_failure_ends_in_the_clear_error_after_a_few_tries(flaky: FlakyMirror, run_fmnist):
    flaky.staged[NAMES[0]] = [503] * (ATTEMPTS * 2)

    started = time.monotonic()
    line = run_fmnist("data", "fetch").error_line(
        "no Fashion-MNIST data found and it could not be downloaded", f"{flaky.url}{NAMES[0]}", "503", f"{ATTEMPTS} tries"
    )

    assert len(flaky.requests[NAMES[0]]) == ATTEMPTS, line
    assert time.monotonic() - started < 60
    assert leftovers(cache_data_dir()) == []


def test_a_body_cut_short_every_time_is_the_existing_error(flaky: FlakyMirror):
    flaky.staged[SMALL] = ["cut"] * ATTEMPTS

    with pytest.raises(DataError, match=rf"was cut short .* \({ATTEMPTS} tries\)"):
        download()

    assert len(flaky.requests[SMALL]) == ATTEMPTS
    assert not (cache_data_dir() / SMALL).exists()
    assert leftovers(cache_data_dir()) == []


def test_the_waits_grow_exponentially(flaky: FlakyMirror, monkeypatch: pytest.MonkeyPatch):
    base = 0.05
    monkeypatch.setenv("FMNIST_DOWNLOAD_BACKOFF_S", str(base))
    flaky.staged[NAMES[0]] = [503] * (ATTEMPTS - 1)

    download()

    times = flaky.requests[NAMES[0]]
    assert len(times) == ATTEMPTS
    gaps = [later - earlier for earlier, later in pairwise(times)]
    for retry, gap in enumerate(gaps):
        assert gap >= base * 2**retry * 0.9, gaps  # the wait before try retry + 2


def test_retry_after_is_honoured_and_an_excessive_one_gives_up_at_once(flaky: FlakyMirror):
    flaky.staged[NAMES[0]] = [429]
    flaky.retry_after = "0"
    download()
    assert len(flaky.requests[NAMES[0]]) == 2

    for name in NAMES:
        (cache_data_dir() / name).unlink()
    flaky.requests.clear()
    flaky.staged[NAMES[0]] = [503]
    flaky.retry_after = "3600"  # beyond the bounded wait: not slept
    started = time.monotonic()
    with pytest.raises(DataError, match="503"):
        download()
    assert time.monotonic() - started < 10
    assert len(flaky.requests[NAMES[0]]) == 1


@pytest.mark.parametrize("value", ["soon", "-1", "3600"])
def test_a_bad_backoff_setting_is_one_line(flaky: FlakyMirror, run_fmnist, monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv("FMNIST_DOWNLOAD_BACKOFF_S", value)
    run_fmnist("data", "fetch").error_line("FMNIST_DOWNLOAD_BACKOFF_S")

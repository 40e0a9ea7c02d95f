"""Download the four original files into the cache, verifying their content.

Each file is streamed to a temporary name beside its target, decompressed and checked
against the official content SHA-256, and only then renamed into place: an interrupted
or corrupt download never leaves a file under the final name.

Transient failures (connection refused or reset, timeouts, a body cut short, HTTP 5xx,
408 and 429) are retried on the same mirror with exponential backoff, a few times within
a bounded wait; a definite answer (404 and the other 4xx, an unknown host, wrong content)
is not, so the next mirror, or the clear error, comes at once.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fmnist.data.idx import GZIP_MAGIC, read_content
from fmnist.data.locate import no_data_message
from fmnist.data.official import OFFICIAL_FILES, OFFICIAL_MIRRORS, OfficialFile
from fmnist.errors import ConfigError, DataError
from fmnist.files import atomic_path

log = logging.getLogger(__name__)
CHUNK = 1 << 16
TIMEOUT_S = 30
ATTEMPTS = 4  # per file and mirror: the first try and three retries
BACKOFF_S = 1.0  # the first wait; doubled after each failure (1, 2, 4 s)
BACKOFF_ENV = "FMNIST_DOWNLOAD_BACKOFF_S"  # overrides BACKOFF_S (tests use a few ms)
MAX_WAIT_S = 30.0  # most time spent waiting between tries of one file on one mirror
RETRY_HTTP = {408, 425, 429}  # and every 5xx: the server may answer the next time


class _Unreachable(Exception):
    """The mirror could not be reached (network, DNS, HTTP error): try the next one."""


class _Transient(Exception):
    """A failure worth retrying on the same mirror; ``error`` is raised when the tries run out."""

    def __init__(self, error: Exception, *, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after  # seconds the server asked for (Retry-After), if any


def backoff_base() -> float:
    """The first wait between tries, in seconds (${BACKOFF_ENV} overrides it)."""
    text = os.environ.get(BACKOFF_ENV)
    if text is None:
        return BACKOFF_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT_S:
        raise ConfigError(f"{BACKOFF_ENV}={text!r}: expected seconds between 0 and {MAX_WAIT_S:g}", f"unset {BACKOFF_ENV}")
    return value


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    try:
        return max(0.0, float(error.headers.get("Retry-After", "")))
    except (TypeError, ValueError, AttributeError):
        return None  # absent, or an HTTP date: the backoff decides


def _is_transient(error: BaseException) -> bool:
    """Whether opening a URL failed in a way that may not happen the next time."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in RETRY_HTTP
    reason = getattr(error, "reason", error)
    if isinstance(reason, socket.gaierror):
        return reason.errno == socket.EAI_AGAIN  # "temporary failure in name resolution"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return False
    return isinstance(reason, (OSError, http.client.HTTPException))


def mirrors() -> tuple[str, ...]:
    """Base URLs to try in order ($FMNIST_MIRROR, comma-separated, overrides the official ones)."""
    override = os.environ.get("FMNIST_MIRROR")
    chosen = tuple(part.strip() for part in override.split(",") if part.strip()) if override else OFFICIAL_MIRRORS
    return tuple(url if url.endswith("/") else url + "/" for url in chosen)


def is_verified_copy(path: Path, official: OfficialFile) -> bool:
    """Whether ``path`` holds the official content (the gzip bytes may differ)."""
    if not path.is_file():
        return False
    try:
        content = read_content(path)
    except DataError:
        return False
    return hashlib.sha256(content).hexdigest() == official.content_sha256


def max_download_bytes(official: OfficialFile) -> int:
    """More than any gzip file of the official content can be: deflate expands
    incompressible data by at most ~0.03% (zlib's deflateBound), the gzip header and
    trailer add a few bytes; 1% + 64 KiB of headroom."""
    return official.content_size + official.content_size // 100 + (64 << 10)


def _too_large(official: OfficialFile, url: str, size: int, limit: int) -> DataError:
    return DataError(
        f"the download of {official.name} from {url} is larger than the file can be "
        f"({size:,} bytes, over {limit:,}; its content is {official.content_size:,} bytes)",
        "set FMNIST_MIRROR to another copy",
    )


def _check_content(path: Path, official: OfficialFile, url: str) -> None:
    # ``path`` is the temporary name, so read_content cannot see the .gz of the final one:
    # content that is not gzip would pass here and be refused by every later read.
    with open(path, "rb") as handle:
        if handle.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            raise DataError(
                f"the download of {official.name} from {url} is corrupt: the content is not gzip data",
                "try again, or set FMNIST_MIRROR to another copy",
            )
    try:
        content = read_content(path)
    except DataError as error:
        raise DataError(
            f"the download of {official.name} from {url} is corrupt: {error.problem.split(': ', 1)[-1]}",
            "try again, or set FMNIST_MIRROR to another copy",
        ) from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != official.content_sha256:
        raise DataError(
            f"the download of {official.name} from {url} has the wrong content "
            f"(SHA-256 {digest[:16]}..., expected {official.content_sha256[:16]}...)",
            "try again, or set FMNIST_MIRROR to another copy",
        )


def _fetch(url: str, target: Path, official: OfficialFile, *, progress: bool) -> None:
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error) or type(error).__name__
        status = f" (HTTP {error.code})" if isinstance(error, urllib.error.HTTPError) else ""
        unreachable = _Unreachable(f"{url}: {reason}{status}")
        if _is_transient(error):
            retry_after = _retry_after(error) if isinstance(error, urllib.error.HTTPError) else None
            raise _Transient(unreachable, retry_after=retry_after) from None
        raise unreachable from None
    with response, atomic_path(target) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        limit = max_download_bytes(official)
        if total is not None and total > limit:
            raise _too_large(official, url, total, limit)
        received = 0
        with open(tmp, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=official.name, disable=not progress, leave=False
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (TimeoutError, OSError, http.client.HTTPException) as error:
                    raise _Transient(
                        DataError(
                            f"the download of {official.name} from {url} broke off after {received:,} bytes "
                            f"({error or type(error).__name__})",
                            "try again",
                        )
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:  # a mirror that sends without end never fills the disk
                    raise _too_large(official, url, received, limit)
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise _Transient(
                DataError(
                    f"the download of {official.name} from {url} was cut short ({received:,} of {total:,} bytes)",
                    "try again",
                )
            )
        _check_content(tmp, official, url)


def _tried(error: Exception, attempts: int) -> Exception:
    """``error`` saying how often it was tried."""
    if attempts == 1:
        return error
    if isinstance(error, DataError):
        return DataError(f"{error.problem} ({attempts} tries)", error.fix)
    return type(error)(f"{error} ({attempts} tries)")


def _fetch_with_retries(url: str, target: Path, official: OfficialFile, *, progress: bool) -> None:
    """``_fetch``, retrying transient failures with exponential backoff (ATTEMPTS tries,
    at most MAX_WAIT_S of waiting); then the last failure's own error is raised."""
    wait, waited = backoff_base(), 0.0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _fetch(url, target, official, progress=progress)
            return
        except _Transient as failure:
            # A server's Retry-After is honoured, or given up on when it exceeds the budget.
            pause = failure.retry_after if failure.retry_after is not None else wait
            if attempt == ATTEMPTS or waited + pause > MAX_WAIT_S:
                raise _tried(failure.error, attempt) from None
            # Debug only, as the mirror fallback below: a refusal stays one line.
            log.debug("%s; retrying in %.3g s (try %d of %d)", failure, pause, attempt + 1, ATTEMPTS)
            time.sleep(pause)
            waited += pause
            wait *= 2


def download_official(dest: Path, *, progress: bool = True, local_copies: tuple[Path, ...] = ()) -> list[str]:
    """Put a verified copy of the four official files in ``dest``; return what was done.

    Files already verified in ``dest`` are kept; a verified file in one of
    ``local_copies`` (e.g. the system folder) is copied instead of downloaded.
    Raises DataError when a file cannot be obtained.
    """
    dest.mkdir(parents=True, exist_ok=True)
    actions: list[str] = []
    for official in OFFICIAL_FILES:
        target = dest / official.name
        if is_verified_copy(target, official):
            actions.append(f"{official.name}: already verified")
            continue
        local = next((d / official.name for d in local_copies if is_verified_copy(d / official.name, official)), None)
        if local is not None:
            with atomic_path(target) as tmp:
                shutil.copyfile(local, tmp)
            actions.append(f"{official.name}: copied from {local.parent}")
            continue
        unreachable: list[str] = []
        for base in mirrors():
            try:
                _fetch_with_retries(base + official.name, target, official, progress=progress)
            except _Unreachable as error:
                # Debug only: the CLI shows info on stderr, and the reasons are in the error
                # raised when every mirror fails.
                log.debug("mirror unreachable: %s", error)
                unreachable.append(str(error))
                continue
            actions.append(f"{official.name}: downloaded from {base}")
            break
        else:
            raise no_data_message("; ".join(unreachable))
    return actions

"""Download the four original files into the cache, verifying their content.

Each file is streamed to a temporary name beside its target, decompressed and checked
against the official content SHA-256, and only then renamed into place: an interrupted
or corrupt download never leaves a file under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fmnist.data.idx import GZIP_MAGIC, read_content
from fmnist.data.locate import no_data_message
from fmnist.data.official import OFFICIAL_FILES, OFFICIAL_MIRRORS, OfficialFile
from fmnist.errors import DataError
from fmnist.files import atomic_path

log = logging.getLogger(__name__)
CHUNK = 1 << 16
TIMEOUT_S = 30


class _Unreachable(Exception):
    """The mirror could not be reached (network, DNS, HTTP error): try the next one."""


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
    except (TimeoutError, urllib.error.URLError, OSError) as error:
        raise _Unreachable(f"{url}: {getattr(error, 'reason', error)}") from None
    with response, atomic_path(target) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        received = 0
        with open(tmp, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=official.name, disable=not progress, leave=False
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (TimeoutError, OSError) as error:
                    raise DataError(
                        f"the download of {official.name} from {url} broke off after {received:,} bytes ({error})",
                        "try again",
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise DataError(
                f"the download of {official.name} from {url} was cut short ({received:,} of {total:,} bytes)",
                "try again",
            )
        _check_content(tmp, official, url)


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
                _fetch(base + official.name, target, official, progress=progress)
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

"""A cache of parsed splits as .npy files, so loading 70,000 images again is ~0.1 s.

An entry is keyed by each source file's identity: resolved path, device, inode, size,
and modification and status-change times in nanoseconds. Tools that restore a timestamp
(``cp -p``, ``rsync -t``, ``tar x``, ``os.utime``) cannot restore the status-change time
(ctime): the kernel sets it on every write, rename or utime, so any edit or replacement
makes a new key. Where the file system stamps times coarsely (a tick of a few ms), a file
changed twice within one tick could keep its key; an entry made within ``RACY_WINDOW_NS``
of a source file's last change therefore also records the SHA-256 of the file's bytes as
the parser read them, and is trusted only after that digest is checked again (as git does
for "racily clean" files), until the file is old enough for its key alone.

Each entry stores the SHA-256 of its arrays' bytes, checked on every load: a damaged entry
is discarded (with a log line) and the files are parsed again. That costs ~40 ms for the
47 MB of training images (SHA-256 runs at ~1.2 GB/s here with the CPU's SHA extensions;
BLAKE2b was half as fast). Entries are written to a temporary folder and renamed into
place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.data.input_files import open_regular_file
from fmnist.data.locate import SplitFiles, cache_root
from fmnist.data.npz import npy_header
from fmnist.errors import DataError

log = logging.getLogger(__name__)
FORMAT_VERSION = 2
# Coarser than any file system's timestamps that matter here (ext4, XFS, tmpfs, NFS: ns
# to ms; FAT: 2 s).
RACY_WINDOW_NS = 3_000_000_000
_ARRAYS = (("images", np.uint8, 3), ("labels", np.int64, 1))
_READ_CHUNK = 1 << 20
_MAX_INFO_BYTES = 1 << 16  # an entry's info.json is ~300 bytes


@dataclass(frozen=True)
class CachedSplit:
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # int64 (N,)
    info: dict  # what was learned when parsing: digests, verification


@dataclass(frozen=True)
class SourceState:
    """What the source files looked like just before they were parsed."""

    key: str
    racy: bool  # changed so recently that a further change might keep the key


def _identity(files: SplitFiles) -> list:
    identity: list = [FORMAT_VERSION, files.format]
    for path in files.paths:
        status = path.stat()
        identity.append(
            [str(path.resolve()), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
        )
    return identity


def _key(files: SplitFiles) -> str:
    return hashlib.sha256(json.dumps(_identity(files)).encode()).hexdigest()[:32]


def _file_digests(files: SplitFiles) -> list[str]:
    """SHA-256 of each file's bytes; bounded, as the files have the size their key records."""
    digests = []
    for path in files.paths:
        digest = hashlib.sha256()
        with open_regular_file(path) as handle:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
        digests.append(digest.hexdigest())
    return digests


def _is_racy(files: SplitFiles, now_ns: int) -> bool:
    """Whether a source file changed so recently that a further change might keep its times."""
    return any(now_ns - max(path.stat().st_ctime_ns, path.stat().st_mtime_ns) < RACY_WINDOW_NS for path in files.paths)


def source_state(files: SplitFiles) -> SourceState:
    """The files' key, taken before parsing so that a change made while parsing is seen
    by the next load."""
    return SourceState(key=_key(files), racy=_is_racy(files, time.time_ns()))


def _entry_digest(images: np.ndarray, labels: np.ndarray, info: dict) -> str:
    """SHA-256 of the arrays' bytes and of what parsing learned about them (content digest,
    official or not), so neither can be changed alone."""
    digest = hashlib.sha256(json.dumps([info.get("content_digest"), info.get("official")]).encode())
    for array in (images, labels):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _entry_dir(key: str) -> Path:
    return cache_root() / "arrays" / key


def _load_array(path: Path, dtype: type, ndim: int) -> np.ndarray:
    """Read a .npy file written by np.save, checking its header against the file's size
    before allocating: a damaged header claiming a huge shape costs nothing."""
    with open_regular_file(path) as handle:
        shape, fortran_order, found = npy_header(handle)
        if found != np.dtype(dtype) or len(shape) != ndim or fortran_order:
            raise ValueError(f"{path.name}: {found} {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        if os.fstat(handle.fileno()).st_size != handle.tell() + count * found.itemsize:
            raise ValueError(f"{path.name}: the size does not match the shape {shape}")
        array = np.empty(count, dtype=found)
        if handle.readinto(memoryview(array).cast("B")) != array.nbytes:
            raise ValueError(f"{path.name}: truncated")
        return array.reshape(shape)


def _load_info(path: Path) -> dict:
    with open_regular_file(path) as handle:
        text = handle.read(_MAX_INFO_BYTES + 1)
    if len(text) > _MAX_INFO_BYTES:
        raise ValueError("info.json is too large")
    info = json.loads(text)
    if not isinstance(info, dict):
        raise TypeError("info.json is not a mapping")
    return info


def _discard(entry: Path, reason: str) -> None:
    log.info("cache entry %s is damaged (%s); parsing the data files again", entry, reason)
    shutil.rmtree(entry, ignore_errors=True)


def load_cached(files: SplitFiles) -> CachedSplit | None:
    """The cached arrays for ``files`` if an entry matches them and its content checks out."""
    entry = _entry_dir(_key(files))
    if not entry.is_dir():
        return None
    try:
        info = _load_info(entry / "info.json")
        images = _load_array(entry / "images.npy", np.uint8, 3)
        labels = _load_array(entry / "labels.npy", np.int64, 1)
        stored_digest = info["array_sha256"]
    except (DataError, OSError, ValueError, EOFError, KeyError, TypeError) as error:  # EOFError: an empty .npy
        _discard(entry, str(error) or type(error).__name__)
        return None
    if len(images) != len(labels) or images.shape[1:] != (28, 28) or _entry_digest(images, labels, info) != stored_digest:
        _discard(entry, "its arrays do not match their stored digest")
        return None
    if info.get("file_sha256") is not None:
        try:
            changed = _file_digests(files) != info["file_sha256"]
        except DataError:
            return None
        if changed:
            # Changed within one timestamp tick of the entry: the entry is replaced.
            log.info("%s changed since it was cached; parsing it again", ", ".join(map(str, files.paths)))
            shutil.rmtree(entry, ignore_errors=True)
            return None
        if not _is_racy(files, time.time_ns()):
            # The files are as cached and now too old to change unseen: trust the key from here on.
            _write_info(entry, {**info, "file_sha256": None})
    return CachedSplit(images=images, labels=labels, info=info)


def _write_info(entry: Path, info: dict) -> None:
    try:
        staging = entry / ".info.json.tmp"
        staging.write_text(json.dumps(info))
        os.replace(staging, entry / "info.json")
    except OSError:
        pass


def store_cached(
    state: SourceState, images: np.ndarray, labels: np.ndarray, info: dict, file_digests: list[str]
) -> None:
    """Write a cache entry atomically; a failure to cache never fails the load.

    ``file_digests`` are the SHA-256 of each source file's bytes as parsed; they are kept
    only for a racy entry (see the module docstring)."""
    entry = _entry_dir(state.key)
    if entry.exists():
        return
    info = {
        **info,
        "array_sha256": _entry_digest(images, labels, info),
        "file_sha256": file_digests if state.racy else None,
    }
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=entry.parent))
        try:
            np.save(staging / "images.npy", images)
            np.save(staging / "labels.npy", labels)
            (staging / "info.json").write_text(json.dumps(info))
            os.rename(staging, entry)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        pass

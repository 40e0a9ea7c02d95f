"""A cache of parsed splits as .npy files, so loading 70,000 images again is ~50 ms.

Entries are keyed by the source files' resolved paths, sizes and modification times;
any change to a source file makes a new entry. Each entry is written to a temporary
folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.data.locate import SplitFiles, cache_root

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CachedSplit:
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # int64 (N,)
    info: dict  # what was learned when parsing: digests, verification


def _key(files: SplitFiles) -> str:
    identity = [FORMAT_VERSION, files.format]
    for path in files.paths:
        stat = path.stat()
        identity.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def _entry_dir(files: SplitFiles) -> Path:
    return cache_root() / "arrays" / _key(files)


def load_cached(files: SplitFiles) -> CachedSplit | None:
    entry = _entry_dir(files)
    try:
        info = json.loads((entry / "info.json").read_text())
        images = np.load(entry / "images.npy")
        labels = np.load(entry / "labels.npy")
    except (OSError, ValueError, EOFError):  # np.load raises EOFError on an empty file
        return None
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        return None
    return CachedSplit(images=images, labels=labels, info=info)


def store_cached(files: SplitFiles, images: np.ndarray, labels: np.ndarray, info: dict) -> None:
    """Write a cache entry atomically; a failure to cache never fails the load."""
    entry = _entry_dir(files)
    if entry.exists():
        return
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

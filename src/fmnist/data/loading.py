"""Load a split as uint8 arrays: locate, parse (IDX or CSV), verify, cache."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.data.cache import load_cached, source_state, store_cached
from fmnist.data.download import download_official
from fmnist.data.idx import read_idx_pair
from fmnist.data.kaggle_csv import read_kaggle_csv
from fmnist.data.locate import (
    SPLITS,
    DataSource,
    SplitFiles,
    cache_data_dir,
    find_existing_source,
    no_data_message,
    scan_folder,
    system_data_dirs,
)
from fmnist.data.official import OFFICIAL_CONTENT_DIGESTS, content_digest
from fmnist.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """One split's data and where it came from."""

    name: str  # "train" or "test"
    images: np.ndarray  # uint8 (N, 28, 28), 0 = black background
    labels: np.ndarray  # int64 (N,)
    source: DataSource
    files: SplitFiles
    content_digest: str  # order- and format-independent; see official.content_digest
    official: bool  # whether the content is exactly the official Fashion-MNIST split

    @property
    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=10).tolist()


def locate_data(
    data: str | os.PathLike[str] | None = None, *, download: bool = True, progress: bool = True
) -> DataSource:
    """Find the data in the documented order, downloading into the cache as a last resort."""
    source = find_existing_source(data)
    if source is not None:
        return source
    if not download:
        raise no_data_message("downloading was not allowed")
    folder = cache_data_dir()
    download_official(folder, progress=progress, local_copies=system_data_dirs())
    return DataSource(root=folder, origin="download", splits=scan_folder(folder))


def _parse(files: SplitFiles) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels, and the SHA-256 of each file's bytes as parsed (for the cache)."""
    digests = tuple(hashlib.sha256() for _ in files.paths)
    if files.format == "idx":
        images, labels = read_idx_pair(*files.paths, file_digests=digests)
        return images.array, labels.array.astype(np.int64), [digest.hexdigest() for digest in digests]
    images, labels = read_kaggle_csv(files.paths[0], file_digest=digests[0])
    assert labels is not None  # require_labels=True guarantees it
    return images, labels, [digests[0].hexdigest()]


def load(
    split: str,
    data: str | os.PathLike[str] | None = None,
    *,
    source: DataSource | None = None,
    download: bool = True,
    progress: bool = True,
) -> Split:
    """Load ``split`` ("train" or "test") from ``source`` or from the located data."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    source = source or locate_data(data, download=download, progress=progress)
    files = source.files(split)
    cached = load_cached(files)
    if cached is not None:
        images, labels, info = cached.images, cached.labels, cached.info
    else:
        state = source_state(files)  # before parsing, so a change while parsing is seen later
        images, labels, file_digests = _parse(files)
        digest = content_digest(images, labels)
        info = {"content_digest": digest, "official": digest == OFFICIAL_CONTENT_DIGESTS[split]}
        store_cached(state, images, labels, info, file_digests)
    if not info["official"] and source.origin in ("cache", "download"):
        # Only fmnist writes the cache, and only verified files: a mismatch there means
        # the copy was damaged afterwards.
        raise DataError(
            f"{Path(files.paths[0]).parent}: the cached {split} data is damaged (content does not match "
            "the official Fashion-MNIST)",
            "delete that folder and run `fmnist data fetch`",
        )
    if not info["official"] and source.origin == "system":
        log.warning("%s: the %s data differs from the official Fashion-MNIST content", source.root, split)
    return Split(
        name=split,
        images=images,
        labels=labels,
        source=source,
        files=files,
        content_digest=info["content_digest"],
        official=bool(info["official"]),
    )


def load_split(split: str, data: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a split as ``(images, labels)``: uint8 (N, 28, 28) and int64 (N,).

    ``data`` is a folder holding the IDX files or the Kaggle CSVs (or one CSV file);
    None searches $FMNIST_DATA, the user cache, the system copy, then downloads.
    """
    loaded = load(split, data)
    return loaded.images, loaded.labels

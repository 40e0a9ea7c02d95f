"""Load a split as uint8 arrays: locate, parse (IDX, CSV, .npz or an image folder), verify, cache.

Only IDX and CSV splits are cached (parsing text is what is slow): an .npz file is read
directly each time, and an image folder, whose many files the cache's key could not
cover cheaply, is decoded again each time.
"""

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
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def check_classes(self, class_names: list[str] | tuple[str, ...], model: object) -> None:
        """Refuse to score ``model`` (a name or path, for the message), whose outputs are
        ``class_names``, on this split when its data names other classes."""
        if tuple(class_names) == self.class_names:
            return
        raise DataError(
            f"{model}: the model predicts {len(class_names)} classes ({_shown(class_names)}) but "
            f"{self.source.root} has {len(self.class_names)} ({_shown(self.class_names)})",
            "use data with the model's classes, in the same order (e.g. the same classes.txt or class folders)",
        )

    def describe(self) -> dict:
        """Where the split came from, for run.json and metrics.json: the source kind and
        path, the content digest of its arrays and the class names."""
        return {
            "root": str(self.source.root),
            "origin": self.source.origin,
            "format": self.files.format,
            "files": [str(p) for p in self.files.paths],
            "official": self.official,
            "content_digest": self.content_digest,
            "class_names": list(self.class_names),
            "classes_file": None if self.source.classes_file is None else str(self.source.classes_file),
        }


def _shown(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


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


def _parse(files: SplitFiles, num_classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels, and the SHA-256 of each file's bytes as parsed (for the cache)."""
    digests = tuple(hashlib.sha256() for _ in files.paths)
    if files.format == "idx":
        images, labels = read_idx_pair(*files.paths, file_digests=digests, num_classes=num_classes)
        return images.array, labels.array.astype(np.int64), [digest.hexdigest() for digest in digests]
    images, labels = read_kaggle_csv(files.paths[0], file_digest=digests[0], num_classes=num_classes)
    assert labels is not None  # require_labels=True guarantees it
    return images, labels, [digests[0].hexdigest()]


def _read_uncached(files: SplitFiles, class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    if files.format == "npz":
        from fmnist.data.npz import read_npz_split

        return read_npz_split(files.paths[0], files.split)
    from fmnist.data.image_folder import read_image_split

    images, labels, _ = read_image_split(files.paths[0], class_names)
    return images, labels


def _check_labels(labels: np.ndarray, source: DataSource, files: SplitFiles) -> None:
    """Labels must index the class names (a cache entry or an .npz was not parsed against them)."""
    count = len(source.class_names)
    if len(labels) and int(labels.max()) >= count:
        index = int(np.argmax(labels >= count))
        named_by = source.classes_file or "Fashion-MNIST's ten classes"
        raise DataError(
            f"{files.paths[0]}: label {int(labels[index])} at index {index} is outside 0-{count - 1} "
            f"(the classes are named by {named_by})",
            f"list every class in {source.classes_file or 'a classes.txt next to the data'}, one name per line",
        )


CACHED_FORMATS = ("idx", "csv")


def _content_info(split: str, images: np.ndarray, labels: np.ndarray) -> dict:
    digest = content_digest(images, labels)
    return {"content_digest": digest, "official": digest == OFFICIAL_CONTENT_DIGESTS[split]}


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
    cached = load_cached(files) if files.format in CACHED_FORMATS else None
    if cached is not None:
        images, labels, info = cached.images, cached.labels, cached.info
    elif files.format in CACHED_FORMATS:
        state = source_state(files)  # before parsing, so a change while parsing is seen later
        images, labels, file_digests = _parse(files, len(source.class_names))
        info = _content_info(split, images, labels)
        store_cached(state, images, labels, info, file_digests)
    else:
        images, labels = _read_uncached(files, source.class_names)
        info = _content_info(split, images, labels)
    _check_labels(labels, source, files)
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

    ``data`` is a folder holding the IDX files or the Kaggle CSVs, an image folder, or
    one CSV or .npz file; None searches $FMNIST_DATA, the user cache, the system copy, then downloads.
    """
    loaded = load(split, data)
    return loaded.images, loaded.labels

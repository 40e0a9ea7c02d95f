"""A description of the located data, for `fmnist data info`."""

from __future__ import annotations

import os

from fmnist.data.loading import load, locate_data
from fmnist.data.locate import SPLITS

ORIGIN_TEXT = {
    "--data": "named with --data",
    "$FMNIST_DATA": "named by $FMNIST_DATA",
    "cache": "fmnist's cache",
    "system": "system copy (Debian package dataset-fashion-mnist)",
    "download": "downloaded just now",
}


def describe_data(data: str | os.PathLike[str] | None = None, *, download: bool = True, progress: bool = True) -> dict:
    """Where the data came from, its format, counts, class balance and checksum status."""
    source = locate_data(data, download=download, progress=progress)
    description: dict = {
        "root": str(source.root),
        "origin": source.origin,
        "origin_text": ORIGIN_TEXT[source.origin],
        "class_names": list(source.class_names),
        "classes_file": None if source.classes_file is None else str(source.classes_file),
        "splits": {},
    }
    for split in SPLITS:
        if split not in source.splits:
            description["splits"][split] = None
            continue
        loaded = load(split, source=source)
        description["splits"][split] = {
            "format": loaded.files.format,
            "files": [str(path) for path in loaded.files.paths],
            "images": len(loaded.labels),
            "class_counts": dict(zip(loaded.class_names, loaded.class_counts)),
            "content_digest": loaded.content_digest,
            "official": loaded.official,
        }
    return description

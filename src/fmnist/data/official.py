"""What the official Fashion-MNIST release looks like: file names, mirrors, checksums.

Checksums are SHA-256 digests of the *decompressed* IDX content. The gzip bytes differ
between sources (Debian's package recompresses them, for one) while the content does not,
so every true copy passes and a corrupt one is named.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# Tried in order. The first is the address the dataset's authors publish.
OFFICIAL_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


@dataclass(frozen=True)
class OfficialFile:
    name: str  # file name as published (gzipped)
    split: str  # "train" or "test"
    kind: str  # "images" or "labels"
    content_sha256: str  # of the decompressed bytes
    content_size: int  # decompressed bytes


OFFICIAL_FILES: tuple[OfficialFile, ...] = (
    OfficialFile(
        "train-images-idx3-ubyte.gz", "train", "images",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016,
    ),
    OfficialFile(
        "train-labels-idx1-ubyte.gz", "train", "labels",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008,
    ),
    OfficialFile(
        "t10k-images-idx3-ubyte.gz", "test", "images",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016,
    ),
    OfficialFile(
        "t10k-labels-idx1-ubyte.gz", "test", "labels",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008,
    ),
)

# Order-independent digests of each split's (label, pixels) rows; see content_digest().
# They let a copy in any format and any row order (the Kaggle CSVs) be checked.
OFFICIAL_CONTENT_DIGESTS: dict[str, str] = {
    "train": "56016b2341e99c383df5cc0ed736f4afb12a6c90855d9f3d69981b294a0159ad",
    "test": "b73438e78d64c9f337edad19c3eea888b49d646dbe27b46e4e3177218f3581e7",
}


def content_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the split's rows (label byte + 784 pixel bytes), sorted bytewise.

    Sorting makes the digest independent of row order and of the file format, so the
    IDX files and the Kaggle CSVs of the same data give the same digest.
    """
    count = len(labels)
    rows = np.empty((count, 1 + 28 * 28), dtype=np.uint8)
    rows[:, 0] = labels
    rows[:, 1:] = images.reshape(count, -1)
    as_records = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    return hashlib.sha256(np.sort(as_records).tobytes()).hexdigest()

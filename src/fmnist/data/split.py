"""Stratified, seeded train/validation split. The test split is never touched here."""

from __future__ import annotations

import numpy as np

from fmnist.errors import ConfigError


def stratified_split(labels: np.ndarray, val_fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, validation indices), each class split in the same proportion."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}", "e.g. --val-fraction 0.1")
    # Imported here: scikit-learn takes ~1 s to import and every `fmnist data` command
    # imports this package without needing it.
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        train_idx, val_idx = train_test_split(
            indices, test_size=val_fraction, random_state=seed, stratify=labels, shuffle=True
        )
    except ValueError as error:
        raise ConfigError(
            f"cannot split {len(labels)} images {1 - val_fraction:.0%}/{val_fraction:.0%} by class ({error})",
            "use more images (--subset) or a different --val-fraction",
        ) from None
    return np.sort(train_idx), np.sort(val_idx)

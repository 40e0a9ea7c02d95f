"""Specialists: second-stage models trained only on a group of easily confused classes.

A specialist run trains on the group's images with labels remapped to 0..k-1 (its model
has k outputs and stores the group's class names), and its model card names the base run
that consults it; evaluation/specialist.py combines the two.
"""

from __future__ import annotations

import numpy as np

from fmnist.data.classes import CLASS_NAMES
from fmnist.errors import ConfigError

# The groups the base model confuses most (see docs/analysis.md): the four upper-body garments.
SPECIALIST_GROUPS: dict[str, tuple[str, ...]] = {
    "tops": ("T-shirt/top", "Pullover", "Coat", "Shirt"),
}


def group_classes(name: str) -> tuple[int, ...]:
    """The labels (indices into CLASS_NAMES) of specialist group ``name``, in label order."""
    if name not in SPECIALIST_GROUPS:
        raise ConfigError(f"unknown specialist group {name!r}", f"choose one of: {', '.join(SPECIALIST_GROUPS)}")
    return tuple(sorted(CLASS_NAMES.index(class_name) for class_name in SPECIALIST_GROUPS[name]))


def restrict_to_group(images: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The images of the group's classes, with labels remapped to 0..k-1 (group order)."""
    classes = np.asarray(group_classes(name))
    keep = np.isin(labels, classes)
    remap = np.full(len(CLASS_NAMES), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    return images[keep], remap[labels[keep]]


def specialist_card(name: str, base_run: str) -> tuple[list[str], dict]:
    """(class names, the model card's ``extra['specialist']``) for a specialist of group ``name``."""
    classes = group_classes(name)
    return [CLASS_NAMES[i] for i in classes], {"group": name, "classes": list(classes), "base_run": base_run}

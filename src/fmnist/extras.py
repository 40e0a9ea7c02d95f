"""The optional extras (pyproject's optional-dependencies) and the one check for them.

The core install (`pip install fmnist`) trains, evaluates and writes the report. What
needs an extra either refuses in one line naming it (``require``: `fmnist serve` without
FastAPI) or is left out with a note (``available`` + ``note_missing``: the report's
likely-label-errors section without cleanlab). Every import of an optional module goes
through here, so the message is the same everywhere.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from fmnist.errors import FmnistError

log = logging.getLogger("fmnist")

# extra -> the modules it provides that fmnist imports (import names, not package names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "python_multipart", "prometheus_client"),
    "export": ("onnx", "onnxruntime"),
    "analysis": ("cleanlab",),
    "tensorboard": ("tensorboard",),
    "mlflow": ("mlflow",),
    "tune": ("optuna",),
    "tune-postgres": ("optuna", "psycopg"),
}

_noted: set[tuple[str, str]] = set()


class MissingExtra(FmnistError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, feature: str, extra: str, *, instead: str | None = None) -> None:
        self.feature, self.extra = feature, extra
        hint = install_hint(extra)
        super().__init__(f"{feature} needs the {extra} extra", f"{hint}, or {instead}" if instead else hint)


def install_hint(extra: str) -> str:
    return f"install fmnist[{extra}]: pip install 'fmnist[{extra}]'"


def _modules(extra: str, modules: tuple[str, ...]) -> tuple[str, ...]:
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return modules or EXTRAS[extra]


def require(extra: str, *modules: str, feature: str, instead: str | None = None) -> ModuleType:
    """Import ``modules`` (default: all of the extra's) and return the first, or raise
    MissingExtra naming ``feature`` (e.g. "fmnist serve"), the extra to install and, when
    given, what to do ``instead`` (e.g. "pass --label-issues 0").

    Imported, not only looked up: an installed module that cannot load (a missing shared
    library) is as unusable as an absent one."""
    loaded = []
    for name in _modules(extra, modules):
        try:
            loaded.append(importlib.import_module(name))
        except ImportError:
            raise MissingExtra(feature, extra, instead=instead) from None
    return loaded[0]


def available(extra: str, *modules: str) -> bool:
    """Whether ``modules`` (default: all of the extra's) can be imported."""
    try:
        require(extra, *modules, feature="")
    except MissingExtra:
        return False
    return True


def note_missing(extra: str, feature: str) -> str:
    """The text saying ``feature`` was left out for want of ``extra``; logged as a warning
    the first time in this process (a report is written once, but one command may write two)."""
    text = f"{feature} is left out: it needs the {extra} extra ({install_hint(extra)})"
    if (extra, feature) not in _noted:
        _noted.add((extra, feature))
        log.warning("%s", text)
    return text

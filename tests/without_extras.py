"""Run fmnist as a core-only install sees it: the optional extras' modules cannot be imported.

    python tests/without_extras.py ARGS...     # the `fmnist ARGS...` command, extras blocked

A ``None`` in ``sys.modules`` makes ``import name`` raise ModuleNotFoundError and
``importlib.util.find_spec(name)`` return None, exactly as for a module that is not
installed (torch, for one, probes for onnx that way). CI also runs a real core-only
virtualenv (tests/core_install_check.sh); this is the fast stand-in for the test suite.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()

# The import names of every optional extra's packages (pyproject.toml), and of what they
# pull in, so that nothing reaches them through a dependency either.
OPTIONAL_MODULES = (
    "cleanlab",  # analysis
    "onnx", "onnxruntime", "onnxscript",  # export
    "fastapi", "starlette", "uvicorn", "httptools", "uvloop", "multipart", "python_multipart",  # serve
    "prometheus_client",
    "tensorboard",  # tensorboard
    "mlflow",  # mlflow
    "optuna", "sqlalchemy", "alembic", "psycopg",  # tune, tune-postgres
)


def block() -> None:
    for name in OPTIONAL_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]


if __name__ == "__main__":
    block()
    sys.argv[0] = "fmnist"
    runpy.run_module("fmnist", run_name="__main__", alter_sys=True)

"""No code path unpickles: loading a file fmnist did not write must never run code.

Weights and checkpoints are safetensors; the one reader of PyTorch files (ImageNet weights
in models/pretrained.py) uses torch.load(weights_only=True), which refuses objects other
than tensors and plain containers. This scans every module of the package for the calls
that would unpickle, so a new one fails here instead of in an attacker's hands. (torch.jit.load,
in inference/predictor.py's TorchScriptPredictor, reads TorchScript archives with PyTorch's
own loader, which builds only TorchScript types, not Python objects; the code stored in the
file runs when the model is called, so the docs say to load only .pt files you trust.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import fmnist

SOURCE = Path(fmnist.__file__).resolve().parent
# Modules whose loaders unpickle by design; none may be called.
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}
UNPICKLING_CALLS = {"load", "loads", "Unpickler", "open", "read_pickle"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def find_unpickling(source: str, filename: str = "<source>") -> list[str]:
    """Descriptions of the calls in ``source`` that could unpickle."""
    problems = []
    tree = ast.parse(source, filename)
    imported_from_pickle = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLING_MODULES:
            imported_from_pickle |= {alias.asname or alias.name for alias in node.names if alias.name in UNPICKLING_CALLS}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}: {name}"
        root, _, last = name.rpartition(".")
        if root.split(".")[0] in UNPICKLING_MODULES and last in UNPICKLING_CALLS or name in imported_from_pickle:
            problems.append(f"{where} unpickles")
        elif (last == "load" and root in ("torch", "torch.serialization") or last == "load_state_dict_from_url") and not _is_true(
            _keyword(node, "weights_only")
        ):
            problems.append(f"{where} without weights_only=True")
        elif last in ("load", "loadtxt") and root in ("np", "numpy") and _keyword(node, "allow_pickle") is not None and not (
            isinstance(_keyword(node, "allow_pickle"), ast.Constant) and _keyword(node, "allow_pickle").value is False
        ):
            problems.append(f"{where} with allow_pickle")
        elif name in ("pd.read_pickle", "pandas.read_pickle"):
            problems.append(f"{where} unpickles")
    return problems


def test_no_module_of_fmnist_unpickles() -> None:
    modules = sorted(SOURCE.rglob("*.py"))
    assert len(modules) > 20  # the scan sees the package
    problems = [problem for path in modules for problem in find_unpickling(path.read_text(encoding="utf-8"), str(path.relative_to(SOURCE)))]
    assert problems == []


def test_the_scan_finds_each_way_to_unpickle() -> None:
    # The scan itself must be able to fail: each of these lines would unpickle.
    unsafe = [
        "import pickle\npickle.load(open('f', 'rb'))",
        "import pickle\npickle.loads(b'')",
        "from pickle import loads\nloads(b'')",
        "import torch\ntorch.load('f')",
        "import torch\ntorch.load('f', weights_only=False)",
        "import torch\ntorch.hub.load_state_dict_from_url('u')",
        "import numpy as np\nnp.load('f', allow_pickle=True)",
        "import joblib\njoblib.load('f')",
        "import pandas as pd\npd.read_pickle('f')",
    ]
    for source in unsafe:
        assert find_unpickling(source), source
    safe = [
        "import torch\ntorch.load('f', map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load('f')",
        "import pickle\nexcept_class = pickle.UnpicklingError",
        "import json\njson.loads('{}')",
    ]
    for source in safe:
        assert find_unpickling(source) == [], source

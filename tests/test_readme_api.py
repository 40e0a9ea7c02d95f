"""The README's "Python API" section is true: its ```python blocks, in order, run as one
script in a fresh interpreter on a small learnable dataset in a temporary folder (slow),
and every name they import exists (fast)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "Python API"


def api_blocks(text: str) -> list[str]:
    """The ```python blocks of the README's Python API section (before its subsections), in order."""
    heading = f"\n## {SECTION}\n"
    assert heading in text, f"the README has no '## {SECTION}' section"
    # The section's own examples: up to its first subsection (which holds standalone scripts).
    section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def script() -> str:
    blocks = api_blocks(README.read_text(encoding="utf-8"))
    assert blocks, f"no ```python block in the README's {SECTION} section"
    return "\n".join(blocks)


def test_every_name_the_examples_import_exists(script: str):
    tree = ast.parse(script)  # a syntax error in the README fails here
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert imported, "the examples import nothing from fmnist"
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"README: `from {module} import {name}` fails"


def write_photo(path: Path) -> None:
    """A phone-photo-like picture: a dark shirt shape on a light, slightly noisy background."""
    rng = np.random.default_rng(0)
    background = rng.normal(225, 6, size=(240, 200, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    draw.polygon([(60, 40), (140, 40), (185, 90), (160, 110), (145, 95), (145, 210), (55, 210), (55, 95), (40, 110), (15, 90)], fill=(40, 50, 90))
    image.save(path, quality=90)


@pytest.mark.slow  # trains the README's run on the small dataset, then uses it: ~30-60 s here
def test_the_python_api_examples_run_as_written(script: str, tmp_path: Path, tiny_run: Path, learnable_writer):
    """The files the examples name but do not make are made first: a photo (shirt.jpg) and
    two runs to compare (runs/a, runs/b); the data are found through $FMNIST_DATA."""
    data = learnable_writer(tmp_path / "data")
    write_photo(tmp_path / "shirt.jpg")
    for name in ("a", "b"):
        shutil.copytree(tiny_run, tmp_path / "runs" / name)
    (tmp_path / "readme_api.py").write_text(script, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "readme_api.py"],
        cwd=tmp_path,
        env=dict(os.environ, FMNIST_DATA=str(data), OMP_NUM_THREADS="2"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"the README's {SECTION} examples failed:\n{done.stderr[-4000:]}"

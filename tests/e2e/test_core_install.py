"""The core install (no extras) trains, evaluates, predicts and writes the report; what
needs an extra refuses in one line naming it (regression: `fmnist train` on a core
install died with a cleanlab ModuleNotFoundError traceback while writing the report).

The CLI runs in a subprocess where the extras' modules cannot be imported
(tests/without_extras.py); CI also builds a real core-only virtualenv
(tests/core_install_check.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_result import CliResult
from PIL import Image
from without_extras import SCRIPT, block

from fmnist.errors import FmnistError


def run_core(*args: str, cwd: Path, timeout: float = 300) -> CliResult:
    """``fmnist ARGS`` in a subprocess where no extra's module can be imported."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def core_run(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


GATED = [
    (["serve", "{run}"], "fmnist serve needs the serve extra", "fmnist[serve]"),
    (["serve", "{run}", "--workers", "2"], "fmnist serve needs the serve extra", "fmnist[serve]"),
    (["serve", "{run}", "--backend", "onnxruntime"], "needs the serve extra", "fmnist[serve]"),
    (["export", "{run}", "--format", "onnx", "--out", "{tmp}/m.onnx"], "needs the export extra", "fmnist[export]"),
    (["export", "{run}", "--format", "onnx", "--int8", "--out", "{tmp}/m.onnx"], "needs the export extra", "fmnist[export]"),
    (["predict", "{run}", "{tmp}", "--backend", "onnxruntime"], "needs the export extra", "fmnist[export]"),
    (["analyze", "{run}"], "likely-label-error search of fmnist analyze needs the analysis extra", "--label-issues 0"),
    (["train", "--log", "tensorboard", "--out", "{tmp}/m"], "fmnist train --log tensorboard needs the tensorboard extra", "fmnist[tensorboard]"),
    (["train", "--log", "mlflow", "--out", "{tmp}/m"], "fmnist train --log mlflow needs the mlflow extra", "fmnist[mlflow]"),
    (["tune", "{tmp}/space.yaml", "--out", "{tmp}/m"], "fmnist tune needs the tune extra", "fmnist[tune]"),
]


GATED_IDS = [
    "serve", "serve-workers", "serve-onnxruntime", "export-onnx", "export-int8", "predict-onnxruntime", "analyze",
    "train-tensorboard", "train-mlflow", "tune",
]


@pytest.mark.parametrize(("args", "fragment", "hint"), GATED, ids=GATED_IDS)
def test_commands_that_need_an_extra_refuse_in_one_line(core_run: Path, tmp_path: Path, args, fragment, hint):
    filled = [arg.format(run=core_run, tmp=tmp_path) for arg in args]

    result = run_core(*filled, cwd=tmp_path)

    line = result.error_line(fragment, hint)
    assert line.startswith("fmnist: error: ")
    assert not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "m").exists()  # a refused --log trains nothing


def test_the_report_without_cleanlab_says_which_extra_it_needs(core_run: Path, monkeypatch, caplog):
    from fmnist import extras
    from fmnist.evaluation import evaluate_run
    from fmnist.reports.analysis_section import analysis_section

    predictions, metrics = evaluate_run(core_run, write=False)
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setattr(extras, "_noted", set())

    # As for an ensemble: no saliency or neighbours, which cost seconds and need no extra.
    metrics = {**metrics, "members": [{"model_file": "a"}, {"model_file": "b"}]}
    with caplog.at_level("WARNING", logger="fmnist"):
        first = analysis_section(core_run, predictions, metrics)
        second = analysis_section(core_run, predictions, metrics)

    html = "".join(first.html)
    assert "Likely label errors" in html and "analysis extra" in html and "fmnist[analysis]" in html
    assert "label_issues.png" not in first.pngs
    assert "".join(second.html).count("analysis extra") == 1
    warnings = [record.getMessage() for record in caplog.records if "analysis extra" in record.getMessage()]
    assert len(warnings) == 1, warnings  # once on the console, however many sections are written


def test_interpretation_without_label_issues_needs_no_extra(tiny_run: Path, monkeypatch):
    from fmnist.evaluation.interpretation import Interpretation

    monkeypatch.setitem(sys.modules, "cleanlab", None)
    interpretation = Interpretation.from_run(tiny_run, tiny_run.parent / "data")

    document = interpretation.to_dict(label_issues=0)
    assert "label_issues" not in document and "label_issues_found" not in document
    with pytest.raises(FmnistError, match=r"needs the analysis extra \(install fmnist\[analysis\]"):
        interpretation.to_dict(label_issues=5)


@pytest.mark.slow
def test_analyze_without_label_issues_needs_no_extra(core_run: Path, tiny_run: Path, tmp_path: Path):
    data = tiny_run.parent / "data"
    result = run_core("analyze", str(core_run), "--data", str(data), "--label-issues", "0", "--neighbours", "0",
                      "--format", "json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert "label_issues" not in document and document["test_images"] == 100


def test_core_modules_import_without_any_extra():
    """Every module outside fmnist.serving (which is the serve extra) imports on a core
    install: an optional import at module level anywhere else would break every command."""
    code = (
        "import pkgutil, importlib, fmnist, without_extras\n"
        "without_extras.block()\n"
        "for info in pkgutil.walk_packages(fmnist.__path__, 'fmnist.'):\n"
        "    if not info.name.startswith(('fmnist.serving', 'fmnist.__main__')):\n"
        "        importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=SCRIPT.parent, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_blocker_really_hides_the_extras():
    code = "import without_extras, importlib.util\nwithout_extras.block()\nimport cleanlab\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPT.parent, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr
    probe = "import without_extras, importlib.util\nwithout_extras.block()\nprint(importlib.util.find_spec('onnx'))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=SCRIPT.parent, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "None", done.stderr
    assert callable(block)


@pytest.mark.slow
def test_core_install_trains_evaluates_and_predicts(tmp_path: Path, learnable_dir: Path, small_config: Path):
    out = tmp_path / "run"
    trained = run_core("train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(out),
                       "--epochs", "1", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "Traceback" not in trained.stderr
    assert trained.stderr.count("needs the analysis extra") == 1, trained.stderr
    report = (out / "report.html").read_text()
    assert "fmnist[analysis]" in report and "Where the model errs" in report

    evaluated = run_core("evaluate", str(out), "--data", str(learnable_dir), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test accuracy" in evaluated.stdout

    image = tmp_path / "image.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)
    predicted = run_core("predict", str(out), str(image), "--format", "json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["path"] == str(image)

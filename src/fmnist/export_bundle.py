"""`fmnist export RUN_DIR --format bundle --out DIR`: a folder to hand over or push to a
model hub.

    DIR/model.safetensors   the run's model file (weights + card: classes, temperature, contract)
    DIR/model.onnx          the same model for ONNX Runtime (with the export extra; else left out)
    DIR/prepare_photo.py    the photo -> 28x28 steps in numpy + Pillow, beside model.onnx
    DIR/config.json         the run's resolved training config: `fmnist train --config` takes it
    DIR/README.md           the model card (fmnist.reports.model_card)

`fmnist predict DIR` and `fmnist serve DIR` load the folder as they load a run folder
(model.safetensors, or model.onnx with --backend onnxruntime). Nothing in it names a path
of the training machine. The folder is built beside DIR under a temporary name and renamed
into place, so DIR is the old bundle or the new one, never half of one; DIR may be new, an
empty folder or an earlier bundle, never a run folder or a folder of other files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fmnist import extras
from fmnist.errors import ConfigError, RunError
from fmnist.export import PHOTO_REFERENCE, export_onnx, write_photo_reference
from fmnist.files import (
    TEMPORARY_SUFFIX,
    atomic_write_text,
    disk_full_error,
    is_no_space,
)
from fmnist.reports.model_card import CardFile, file_entry, render_model_card
from fmnist.run import CONFIG_FILE, MODEL_FILE, Run

ONNX_FILE = "model.onnx"
CARD_FILE = "README.md"
PHOTO_FILE = PHOTO_REFERENCE  # the photo steps in numpy + Pillow
BUNDLE_FILES = (MODEL_FILE, ONNX_FILE, PHOTO_FILE, CONFIG_FILE, CARD_FILE)
# Config fields that may name a file or folder of the training machine.
PATH_FIELDS = ("pretrained", "init_run", "base_run", "data")
ONNX_SKIPPED = (
    "`model.onnx` is not included: the bundle was made without the export extra "
    f"({extras.install_hint('export')}; then export the bundle again)."
)


@dataclass
class BundleResult:
    path: Path
    files: list[CardFile]
    onnx_skipped: bool  # the export extra was missing
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        rows = {"format": "bundle", "written": str(self.path)}
        for entry in self.files:
            rows[entry.name] = f"{entry.bytes:,} bytes"
        rows[CARD_FILE] = "model card"
        if self.onnx_skipped:
            rows[ONNX_FILE] = f"skipped: {extras.install_hint('export')}"
        return rows


def portable(value: object, key: str = "") -> object:
    """``value`` (JSON) with every path of this machine reduced to its last part: the
    PATH_FIELDS' values, and any absolute or home-relative string elsewhere."""
    if isinstance(value, dict):
        return {k: portable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, key) for v in value]
    if isinstance(value, str) and (key in PATH_FIELDS or os.path.isabs(value) or value.startswith("~")):
        return Path(value).name or value
    return value


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` holds a bundle (and nothing that only a run folder has)."""
    names = {entry.name for entry in folder.iterdir()}
    return CARD_FILE in names and MODEL_FILE in names and names <= set(BUNDLE_FILES)


def _check_out(run: Run, out: Path) -> None:
    if not out.exists():
        if not out.parent.is_dir():
            raise ConfigError(f"--out {out}: its parent folder does not exist", "create it first or pick another --out")
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file", "a bundle is a folder: give a new folder name")
    if out.resolve() == run.root.resolve() or (out.resolve() in run.root.resolve().parents):
        raise ConfigError(f"--out {out} holds the run itself", "give a folder outside the run")
    if any(out.iterdir()) and not is_bundle(out):
        what = "a run folder" if Run.is_run(out) else "a folder with other files"
        raise ConfigError(f"--out {out} is {what}; a bundle never replaces it", "give a new or empty folder")


def _model_card_document(model_path: Path) -> dict:
    from fmnist.models.saved import load_model

    loaded = load_model(model_path)  # validated: a damaged model is refused before anything is written
    if loaded.card.specialist is not None:
        base = loaded.card.specialist.get("base_run")
        raise RunError(
            f"{model_path}: a specialist answers only together with its base run",
            f"export the base run {base} as a bundle instead",
        )
    return loaded.card.to_dict()


def _write_files(run: Run, folder: Path, *, data: str | Path | None) -> tuple[list[CardFile], bool]:
    model_path = run.model_path()
    shutil.copyfile(model_path, folder / MODEL_FILE)
    files = [file_entry(folder / MODEL_FILE, "weights and model card (safetensors)")]
    onnx_skipped = not extras.available("export")
    if not onnx_skipped:
        export_onnx(model_path, folder / ONNX_FILE, data=data)  # checked against PyTorch
        files.append(file_entry(folder / ONNX_FILE, "the same model for ONNX Runtime: uint8 images in, probabilities out"))
    write_photo_reference(folder)  # numpy + Pillow only: useful with either model file
    files.append(file_entry(folder / PHOTO_FILE, "photo -> 28×28 uint8 as `fmnist predict` does it (numpy + Pillow)"))
    config = portable(run.config_values())
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    files.append(file_entry(folder / CONFIG_FILE, "resolved training config (`fmnist train --config`)"))
    return files, onnx_skipped


def export_bundle(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, data: str | Path | None = None) -> BundleResult:
    """Write the bundle of an evaluated run folder to the folder ``out`` (see the module
    docstring). ``data``: training images for the ONNX parity check (default: search; random
    images when none are found)."""
    run = Run(run_dir)
    out = Path(out).expanduser()
    _check_out(run, out)
    metrics = run.metrics().document  # RunError "not evaluated yet" with the command to run
    card = _model_card_document(run.model_path())
    if list(metrics.get("class_names") or []) != list(card.get("class_names") or []):
        # metrics.json of another model (a model file copied in since): the card would mix them.
        raise RunError(
            f"{run.root}: metrics.json was measured on other classes than model.safetensors has",
            f"evaluate the run again: fmnist evaluate {run.root}",
        )
    calibration = run.calibration()
    provenance = portable(run.provenance().document)
    history = [record.to_dict() for record in run.history()]
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")
    temporary.mkdir()
    try:
        files, onnx_skipped = _write_files(run, temporary, data=data)
        text = render_model_card(
            name=run.name, config=portable(run.config_values()), provenance=provenance, history=history,
            metrics=portable(metrics), calibration=None if calibration is None else calibration.to_dict(),
            card=portable(card), files=files, onnx_note=ONNX_SKIPPED,
        )
        atomic_write_text(temporary / CARD_FILE, text)
        _replace(temporary, out)
    except OSError as error:
        if is_no_space(error):
            raise disk_full_error(out) from None
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return BundleResult(out, files, onnx_skipped, notes=[ONNX_SKIPPED] if onnx_skipped else [])


def _replace(temporary: Path, out: Path) -> None:
    """Rename ``temporary`` to ``out``; an existing (empty or bundle) ``out`` is moved
    aside first and removed after, so a crash leaves one of the two whole."""
    if not out.exists():
        temporary.rename(out)
        return
    old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old{TEMPORARY_SUFFIX}")
    out.rename(old)
    try:
        temporary.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)

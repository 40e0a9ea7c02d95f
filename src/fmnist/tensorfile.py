"""safetensors files with a JSON document attached, written atomically.

safetensors holds tensors only, never pickled code, so loading a file cannot run
anything. Everything that is not a tensor (model arguments, optimizer hyperparameters,
early-stopping state, history) goes into one JSON document in the file's metadata;
tensors nested inside that document are replaced by ``{"__tensor__": key}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fmnist.errors import RunError
from fmnist.files import NO_SPACE_ERRNOS, atomic_path, disk_full_error

METADATA_KEY = "fmnist"


def flatten_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor in a nested dict/list into ``tensors``, leaving references behind."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        return {str(k): flatten_tensors(v, f"{prefix}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [flatten_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    return value


def restore_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_tensors."""
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        return {k: restore_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_tensors(v, tensors) for v in value]
    return value


def save_tensor_file(path: Path, tensors: dict[str, torch.Tensor], document: dict) -> None:
    """Write tensors plus a JSON document to ``path`` atomically; a full file system is a
    DiskFullError and leaves the previous file in place."""
    with atomic_path(path) as tmp:
        try:
            save_file(
                {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata={METADATA_KEY: json.dumps(document)},
            )
        except SafetensorError as error:
            # safetensors reports I/O errors as text only, e.g. "I/O error: No space left
            # on device (os error 28)".
            if any(f"os error {code})" in str(error) for code in NO_SPACE_ERRNOS):
                raise disk_full_error(path) from None
            raise


def load_tensor_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by save_tensor_file; a RunError names a bad or foreign file."""
    if not path.is_file():
        raise RunError(f"{path}: no such file", "check the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{path}: not a readable safetensors file ({error})", "the file is corrupt; retrain or re-export") from None
    if METADATA_KEY not in metadata:
        raise RunError(f"{path}: a safetensors file, but not one written by fmnist", "pass a run folder or an fmnist model file")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError:
        raise RunError(f"{path}: its fmnist metadata is corrupt", "retrain or re-export") from None
    return tensors, document

"""safetensors files with a JSON document attached, written atomically.

safetensors holds tensors only, never pickled code, so loading a file cannot run
anything. Everything that is not a tensor (model arguments, optimizer hyperparameters,
early-stopping state, history) goes into one JSON document in the file's metadata;
tensors nested inside that document are replaced by ``{"__tensor__": key}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fmnist.bounded_json import JsonRefused, loads_bounded
from fmnist.errors import RunError
from fmnist.files import NO_SPACE_ERRNOS, atomic_path, disk_full_error

METADATA_KEY = "fmnist"
# Bounds on what a file may make the reader hold before its tensors are looked at. fmnist's
# own files stay far below: a model card is ~1 kB; a checkpoint's document (config,
# history, optimizer settings) a few tens of kB; a header with every tensor's entry < 1 MB.
MAX_DOCUMENT_CHARS = 1 << 20
MAX_HEADER_BYTES = 16 << 20


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
    """Inverse of flatten_tensors; a reference to a tensor the file lacks is a RunError."""
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            key = value["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise RunError(f"its document refers to a tensor {str(key)[:80]!r} the file does not hold", "the file is corrupt")
            return tensors[key]
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


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the file's header describes it, before any of its data is read."""

    dtype: str  # safetensors' name: "F32", "I64", ...
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES.get(self.dtype, 8)


# safetensors' dtype names of the torch dtypes fmnist writes, and their sizes in bytes.
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

HeaderCheck = Callable[[dict[str, TensorInfo], dict], None]


def _header_length(path: Path) -> int:
    """The length of the safetensors JSON header (the file's first 8 bytes, little-endian)."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise RunError(f"{path}: not a readable safetensors file ({len(prefix)} bytes)", "the file is corrupt; retrain or re-export")
    return int.from_bytes(prefix, "little")


def load_tensor_file(path: Path, *, check: HeaderCheck | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by save_tensor_file; a RunError names a bad or foreign file.

    The header and the JSON document are read and bounded first (header at most
    MAX_HEADER_BYTES, document at most MAX_DOCUMENT_CHARS and MAX_DEPTH levels deep);
    ``check(tensor infos, document)`` then runs before any tensor data is read, so a
    caller can refuse a file by its names, shapes and dtypes without allocating for it.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file", "check the path")
    try:
        header_length = _header_length(path)
        if header_length > MAX_HEADER_BYTES:
            raise RunError(
                f"{path}: its safetensors header claims {header_length:,} bytes, more than the {MAX_HEADER_BYTES:,} allowed",
                "the file is corrupt or not an fmnist file",
            )
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if METADATA_KEY not in metadata:
                raise RunError(f"{path}: a safetensors file, but not one written by fmnist", "pass a run folder or an fmnist model file")
            try:
                # finite=False: a checkpoint's history may hold the NaN loss that stopped a run
                # (json.dumps writes NaN); the model card's schema checks the numbers it uses.
                document = loads_bounded(metadata[METADATA_KEY], max_chars=MAX_DOCUMENT_CHARS, finite=False)
            except JsonRefused as error:
                raise RunError(f"{path}: its fmnist metadata is refused: {error}", "the file is corrupt; retrain or re-export") from None
            if not isinstance(document, dict):
                raise RunError(f"{path}: its fmnist metadata is a {type(document).__name__}, not an object", "the file is corrupt; retrain or re-export")
            if check is not None:
                infos = {}
                for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                    piece = handle.get_slice(key)
                    infos[key] = TensorInfo(str(piece.get_dtype()), tuple(int(size) for size in piece.get_shape()))
                check(infos, document)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise RunError(f"{path}: not a readable safetensors file ({first})", "the file is corrupt; retrain or re-export") from None
    except MemoryError:
        raise RunError(f"{path}: not enough memory to read its tensors", "free memory, or check the file is a model file") from None
    return tensors, document


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [
        key for key, value in tensors.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]

"""What a TorchScript file must be before fmnist runs it: what `fmnist export` writes.

A TorchScript archive is a program, not data: `torch.jit.load` runs its ``__setstate__``
methods, and its ``forward`` may call ``torch.from_file`` (which maps, and so writes, any
file the user can write) or ``torch.save``. `fmnist export` writes *traced* graphs of tensor
operations, so a file is checked against that shape, in two steps:

1. before loading, from the zip directory alone: every member's declared size is bounded
   (the loader allocates what a member claims: a 2 MB file claiming 2 GB of metadata held
   4.4 GB), and no code runs at load time (``__setstate__``);
2. after loading, before any forward pass: every operation of the inlined graph is an
   ``aten::`` or ``prim::`` one, with no control flow (tracing leaves none, so a loop or a
   branch means a hand-written program) and none that touches files or raw storage.

This narrows what a hostile file can do to what a graph of tensor operations can (use
memory and time); it is not a sandbox. ONNX is the format to share with strangers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from fmnist.errors import RunError

MAX_METADATA_BYTES = 1 << 20  # extra/fmnist.json: class names and a few numbers, under 2 KB
MAX_INFLATED_BYTES = 64 << 20  # all compressed members together (code, debug info)
NAMESPACES = ("aten", "prim")
# Operations with effects beyond their tensors: files, raw storage, printing aside.
DENIED = {"aten::from_file", "aten::save", "aten::set_", "aten::set"}
CONTROL_FLOW = {"prim::Loop", "prim::If", "prim::RaiseException", "prim::CallFunction", "prim::CallMethod"}
FIX = "export it again with `fmnist export --format torchscript`, or use the run folder or an ONNX export"


def check_archive(path: Path, metadata_name: str) -> None:
    """Refuse an archive whose members claim more than a bounded size, or whose code
    would run while it loads; read from the zip directory, nothing inflated but the code."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            inflated = 0
            for member in members:
                if member.compress_type != zipfile.ZIP_STORED:
                    inflated += member.file_size
                elif member.file_size != member.compress_size:
                    raise RunError(f"{path}: archive member {member.filename} claims another size than it stores", FIX)
                if member.filename.endswith(f"extra/{metadata_name}") and member.file_size > MAX_METADATA_BYTES:
                    raise RunError(
                        f"{path}: its {metadata_name} claims {member.file_size:,} bytes, more than the "
                        f"{MAX_METADATA_BYTES:,} allowed",
                        FIX,
                    )
            if inflated > MAX_INFLATED_BYTES:
                raise RunError(
                    f"{path}: its compressed members claim {inflated:,} bytes unpacked, more than the {MAX_INFLATED_BYTES:,} allowed",
                    FIX,
                )
            for member in members:
                is_code = "/code/" in member.filename and member.filename.endswith(".py")
                if is_code and b"__setstate__" in archive.read(member):
                    raise RunError(f"{path}: it holds code that runs while it loads (__setstate__)", FIX)
    except zipfile.BadZipFile as error:
        raise RunError(f"{path}: not a TorchScript archive ({error})", FIX) from None
    except (OSError, EOFError, ValueError, NotImplementedError) as error:
        raise RunError(f"{path}: cannot read its archive ({error})", FIX) from None


def check_graph(module: object, path: Path) -> None:
    """Refuse a loaded module whose forward graph is not a traced graph of tensor
    operations (see the module docstring). Raises RunError naming the first offender."""
    try:
        graph = module.inlined_graph  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError) as error:
        raise RunError(f"{path}: its forward graph cannot be read ({error})", FIX) from None
    methods = [name for name in module._c._method_names() if name != "forward"]  # type: ignore[attr-defined]
    if methods:
        raise RunError(f"{path}: it has methods besides forward ({', '.join(sorted(methods)[:5])})", FIX)
    for node in _nodes(graph):
        kind = node.kind()
        namespace = kind.split("::", 1)[0]
        if namespace not in NAMESPACES or kind in DENIED or kind in CONTROL_FLOW:
            reason = "control flow, which a traced export never has" if kind in CONTROL_FLOW else "not a tensor operation of an fmnist export"
            raise RunError(f"{path}: its graph calls {kind} ({reason})", FIX)


def _nodes(block: object):
    for node in block.nodes():  # type: ignore[attr-defined]
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)

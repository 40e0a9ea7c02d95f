"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A full disk (or quota) during a write becomes a one-line DiskFullError naming the file
system, and the file being replaced stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fmnist.errors import ConfigError, DiskFullError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
TEMPORARY_SUFFIX = ".tmp"  # atomic_path's temporary files: ".<name>.<random>.tmp" beside the target
RETRY_FIX = "free space, then run the command again"


def is_no_space(error: BaseException) -> bool:
    """Whether ``error`` is an OSError saying the file system is full or over quota."""
    return isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system that holds ``path`` (or would hold it)."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    current = current.resolve()
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


def disk_full_error(path: str | os.PathLike[str], *, fix: str = RETRY_FIX) -> DiskFullError:
    return DiskFullError(f"no space left on {mount_point(path)} (writing {path})", fix)


def _create_temporary(target: Path) -> tuple[Path, int]:
    """Create an empty temporary file beside ``target``; returns it and the permission bits
    a plain open() would have given it (0o666 less the umask, applied by the kernel, so
    the process-wide umask is never changed, which would race with other threads)."""
    while True:
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            return candidate, os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is a
    rename within one file system (atomic on POSIX). On any exception the temporary
    file is removed and ``path`` is left as it was; a full file system raises
    DiskFullError. The new file gets the mode a plain open() would give it (the umask
    is respected) even when the writer recreated the temporary file: safetensors'
    save_file, for one, writes it anew with mode 0600.
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp, mode = _create_temporary(target)
        yield tmp
        # Flush the data to disk before the rename so a crash cannot leave an empty file
        # under the final name (a read-only descriptor is enough for fsync).
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if is_no_space(error):
            raise disk_full_error(target) from None
        raise


def remove_stale_temporaries(folders: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete temporary files that a killed atomic write left in ``folders`` (not
    recursive); returns what was removed. Only for folders no other process writes to."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for candidate in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            if candidate.is_file() and not candidate.is_symlink():
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    return removed


def same_file(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: equal once resolved (symlinks, ``..``), or the
    same inode (hard links, bind mounts)."""
    first, second = Path(first).expanduser(), Path(second).expanduser()
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def refuse_overwriting(out: str | os.PathLike[str], protected: Iterable[str | os.PathLike[str]], *, flag: str = "--out") -> None:
    """Raise ConfigError when ``out`` names one of the ``protected`` files (the command's
    inputs, the model), under any spelling: symlink, ``..``, hard link."""
    out_path = Path(out).expanduser()
    for item in protected:
        item_path = Path(item).expanduser()
        if same_file(out_path, item_path):
            raise ConfigError(
                f"{flag} {out} would overwrite {item_path}, an input of this command or a file of the model's run",
                f"choose another {flag} file",
            )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")

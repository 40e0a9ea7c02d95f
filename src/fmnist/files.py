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
import stat
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


_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def kind_of(mode: int) -> str:
    """'regular file', 'folder', 'FIFO (named pipe)', ... for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((name for test, name in _KINDS if test(mode)), "special file")


def writable_target(path: str | os.PathLike[str]) -> Path:
    """The file an atomic write to ``path`` replaces: a symlink's target (the link is kept),
    refused in one line when it is a folder, a FIFO, a device or a socket (a rename would
    put a plain file in its place: as root, over /dev/full) or the link loops."""
    target = Path(path)
    if target.is_symlink():
        try:
            target = target.resolve(strict=False)
        except (RuntimeError, OSError):  # a symlink loop
            raise ConfigError(f"{path} is a symlink that loops", "give the path of a regular file") from None
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target  # a new file
    except NotADirectoryError:
        raise ConfigError(f"cannot write {path}: a part of {target.parent} is a file, not a folder", "choose another path") from None
    except OSError as error:
        raise ConfigError(f"cannot write {path} ({error.strerror})", "give the path of a regular file you can write") from None
    if not stat.S_ISREG(mode):
        kind = kind_of(mode)
        fix = "give a file name inside it" if kind == "folder" else "give the path of a regular file (fmnist replaces files atomically)"
        raise ConfigError(f"{path} is a {kind}, not a file", fix)
    return target


def _os_error(error: OSError, target: Path) -> Exception:
    """An OSError of atomic_path's own steps as one line naming the folder or file."""
    if is_no_space(error):
        return disk_full_error(target)
    folder = target.parent
    if isinstance(error, PermissionError):
        return ConfigError(f"{folder}: permission denied, cannot write {target.name} there", "choose a folder you can write to")
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        return ConfigError(f"cannot write {target}: a part of {folder} is a file, not a folder", "choose another path")
    return ConfigError(f"cannot write {target} ({error.strerror or error})", "choose another path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is a
    rename within one file system (atomic on POSIX). On any exception the temporary
    file is removed and ``path`` is left as it was; a full file system raises
    DiskFullError, another failure of these steps (a read-only folder, a parent that is
    a file) a one-line ConfigError. A symlink is written through (its target replaced);
    a folder, FIFO or device is refused (``writable_target``). The new file gets the
    mode a plain open() would give it (the umask is respected) even when the writer
    recreated the temporary file: safetensors' save_file, for one, writes it anew with
    mode 0600.
    """
    target = writable_target(path)
    tmp: Path | None = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp, mode = _create_temporary(target)
        except OSError as error:
            raise _os_error(error, target) from None
        yield tmp
        # Flush the data to disk before the rename so a crash cannot leave an empty file
        # under the final name (a read-only descriptor is enough for fsync).
        try:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as error:
            raise _os_error(error, target) from None
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
    try:
        if first.resolve() == second.resolve():
            return True
    except (RuntimeError, OSError):  # a symlink loop: compare the spelled paths
        if os.path.abspath(first) == os.path.abspath(second):
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

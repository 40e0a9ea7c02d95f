"""Open what the user names as input (data files, folders, images, config files) safely.

Only regular files are read: a FIFO blocks ``open()`` until a writer appears and a device
such as /dev/zero never ends, so both would hang or exhaust memory. The kind is checked
with ``os.stat`` before opening (opening some devices has side effects), and again with
``fstat`` on the opened descriptor, because the path may be swapped in between; the open
itself uses O_NONBLOCK so that a FIFO swapped in cannot block it. Permission problems
become one-line errors naming the path.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import stat
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from fmnist.errors import DataError, FmnistError
from fmnist.files import kind_of

MAX_FOLDER_DEPTH = 64  # sub-folders searched below an input or class folder; deeper trees are refused
PERMISSION_FIX = "make it readable for this user (chmod/chown), or run as a user who can read it"


def permission_error(path: str | os.PathLike[str], error: type[FmnistError] = DataError) -> FmnistError:
    return error(f"{path}: permission denied", PERMISSION_FIX)


def not_regular_error(
    path: str | os.PathLike[str], mode: int, error: type[FmnistError] = DataError
) -> FmnistError:
    return error(
        f"{path}: not a regular file but a {kind_of(mode)}",
        "name a regular file; pipes, devices and sockets are not read",
    )


def stat_input(path: str | os.PathLike[str], error: type[FmnistError] = DataError) -> os.stat_result | None:
    """``os.stat(path)``, or None when nothing is there; permission problems become ``error``."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise permission_error(path, error) from None
    except OSError as problem:
        raise error(f"{path}: cannot read ({problem.strerror})", "check the path") from None


def check_regular_file(path: str | os.PathLike[str], error: type[FmnistError] = DataError) -> os.stat_result:
    """The file's stat, refusing a missing path, a folder, a FIFO or a device with ``error``."""
    status = stat_input(path, error)
    if status is None:
        raise error(f"{path}: no such file", "check the path")
    if not stat.S_ISREG(status.st_mode):
        raise not_regular_error(path, status.st_mode, error)
    return status


def open_regular_file(path: str | os.PathLike[str], error: type[FmnistError] = DataError) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file the user can read."""
    check_regular_file(path, error)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise error(f"{path}: no such file", "check the path") from None
    except PermissionError:
        raise permission_error(path, error) from None
    except OSError as problem:
        raise error(f"{path}: cannot read ({problem.strerror})", "check the path") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular_error(path, mode, error)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def check_readable_folder(path: str | os.PathLike[str], error: type[FmnistError] = DataError) -> None:
    """Refuse a folder whose entries cannot be listed (no read or search permission)."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                entry.stat(follow_symlinks=False)  # needs search (x) permission on the folder
                break
    except PermissionError:
        raise permission_error(path, error) from None
    except OSError as problem:
        raise error(f"{path}: cannot read the folder ({problem.strerror})", "check the path") from None


def refuse_special_file(path: str | os.PathLike[str], error: type[FmnistError] = DataError) -> None:
    """Raise ``error`` when ``path`` exists but is not a regular file (a FIFO would block the
    caller's ``open()``, a device never end); a missing or unreadable path is left for that
    ``open()`` to report."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise not_regular_error(path, mode, error)


class HashingReader(io.RawIOBase):
    """A read-only stream over ``source`` that feeds every byte read to ``digest``: the
    digest is then of exactly the bytes a parser consumed, whatever happens to the file."""

    def __init__(self, source: BinaryIO, digest: hashlib._Hash) -> None:
        self._source = source
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._source.readinto(buffer)
        if count:
            self._digest.update(memoryview(buffer)[:count])
        return count


@contextlib.contextmanager
def gzip_read_errors(path: str | os.PathLike[str], fix: str) -> Iterator[None]:
    """Turn what reading a (possibly gzipped) data file can raise into one-line DataErrors:
    a truncated or corrupt gzip stream (``fix`` says how to get a good copy) and running
    out of memory."""
    try:
        yield
    except EOFError:
        raise DataError(f"{path}: the gzip stream is truncated (the file was cut short)", fix) from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error})", fix) from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read this file", "free memory, or use a smaller file") from None

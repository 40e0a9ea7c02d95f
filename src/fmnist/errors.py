"""The exceptions fmnist raises for problems the user can fix.

Every message is one line that names the problem and the fix. The CLI prints it and
exits with status 2; the HTTP server turns it into a 4xx reply. Anything else that
escapes is a bug and is allowed to crash loudly.
"""

from __future__ import annotations


class FmnistError(Exception):
    """A problem with the user's input, files or settings (never a bug in fmnist)."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})" if fix else problem)


class DataError(FmnistError):
    """A data file or folder is missing, corrupt or not in a supported format."""


class ConfigError(FmnistError):
    """A setting (flag, config file key or value) is invalid."""


class RunError(FmnistError):
    """A run folder or model file is missing, incomplete or incompatible."""


class DiskFullError(FmnistError):
    """A write failed because its file system is full or over quota (ENOSPC, EDQUOT).
    The file being replaced is left as it was."""

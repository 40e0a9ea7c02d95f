"""What a CLI subprocess left behind, and the check of a clean one-line refusal; shared by
conftest's ``run_fmnist`` and the core-install tests (a module of its own, since importing
from ``conftest`` is ambiguous once several test folders have one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def error_line(self, *fragments: str) -> str:
        """Check a clean refusal: exit 2, one stderr line 'fmnist: error: ...', no traceback."""
        assert self.returncode == 2, self
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip("\n").splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("fmnist: error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]

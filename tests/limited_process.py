"""Run fmnist in a subprocess that cannot take the machine: an address-space limit (a
regression fails with MemoryError instead of swapping), a timeout (a regression that
blocks on a FIFO fails instead of hanging), and optionally without root's power to read
any file (so permission tests mean something when the suite runs as root).

Also writers for hostile files that are never held in memory: gzip streams that inflate
to gigabytes are written as repeated gzip members (each compressed once from a buffer of
zeros), which every gzip reader must read as one stream.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

# Measured: `python -m fmnist data info` peaks at ~0.4 GiB of address space, an import of
# torch at ~0.85 GiB. 2 GiB leaves room for honest work; the bombs below inflate to 4 GiB.
MEMORY_LIMIT = 2 << 30
BOMB_BYTES = 4 << 30
TIMEOUT_S = 60

# As root, children run with an empty capability bounding set: after exec even uid 0 is
# then bound by file permissions (no CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH).
_SETPRIV = shutil.which("setpriv")


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def error_line(self, *fragments: str) -> str:
        """The one 'fmnist: error: ...' line of a clean refusal (exit 2, no traceback)."""
        assert "Traceback" not in self.stderr and "MemoryError" not in self.stderr, self.stderr[-3000:]
        assert self.returncode == 2, self
        lines = [line for line in self.stderr.splitlines() if line.startswith("fmnist: error: ")]
        assert len(lines) >= 1, self.stderr
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]


def _limit_memory(memory: int):
    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return setup


def _unprivileged_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    if _SETPRIV is None:
        raise RuntimeError("running as root without setpriv: cannot drop the power to read any file")
    return [_SETPRIV, "--bounding-set=-all", "--"]


def run_limited(
    arguments: list[str],
    *,
    cwd: Path,
    memory: int | None = MEMORY_LIMIT,
    unprivileged: bool = False,
    timeout: float = TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> Finished:
    """Run ``python ARGUMENTS`` under the limits; a timeout fails the test (never hangs)."""
    prefix = _unprivileged_prefix() if unprivileged else []
    done = subprocess.run(
        [*prefix, sys.executable, *arguments],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=None if memory is None else _limit_memory(memory),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Finished(done.returncode, done.stdout, done.stderr)


def run_fmnist_limited(*arguments: str, cwd: Path, **options) -> Finished:
    return run_limited(["-m", "fmnist", *arguments], cwd=cwd, **options)


def permissions_apply(probe_folder: Path) -> bool:
    """Whether an unprivileged child is really refused a mode-000 file (false where root
    cannot drop its capabilities: no setpriv, or no CAP_SETPCAP in a container)."""
    if os.geteuid() == 0 and _SETPRIV is None:
        return False
    probe = probe_folder / "permission-probe"
    probe.write_text("secret")
    probe.chmod(0)
    try:
        done = run_limited(["-c", f"open({str(probe)!r}).read()"], cwd=probe_folder, memory=None, unprivileged=True)
        return done.returncode != 0 and "PermissionError" in done.stderr
    finally:
        probe.unlink()


def gzip_member(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    return compressor.compress(data) + compressor.flush()


def write_gzip_bomb(path: Path, head: bytes, unit: bytes, total: int = BOMB_BYTES) -> Path:
    """A gzip file inflating to ``head`` then ``unit`` repeated up to ``total`` bytes; the
    file itself is a few MB. ``unit`` should be about 16 MiB (it is compressed once)."""
    member = gzip_member(unit)
    with open(path, "wb") as out:
        out.write(gzip_member(head))
        out.writelines(member for _ in range(max(1, total // len(unit))))
    return path

"""How many CPU threads to use: what this process may really run on, not the machine's size.

``os.cpu_count()`` counts the machine's CPUs, ignoring what limits this process: a
``taskset``/cpuset affinity mask, a container's cgroup CPU quota (``docker --cpus``,
Kubernetes limits) and the user's ``OMP_NUM_THREADS``. Running more compute threads than
that oversubscribes the CPUs it has (a quota throttles the whole process once its threads
together exceed it), which is slower than running fewer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # what decided it: "--threads", "OMP_NUM_THREADS" or "available CPUs"


def _read_quota(folder: Path) -> float | None:
    """The CPU quota in CPUs set on one cgroup folder (v2 ``cpu.max`` or v1 CFS files), or None."""
    try:
        text = (folder / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:  # quota -1: unlimited
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _cgroup_folders(proc_cgroup: Path, root: Path) -> list[Path]:
    """The folders of this process's CPU cgroup and its ancestors, where they are visible.

    /proc/self/cgroup names the cgroup relative to the hierarchy's root; inside a container
    without a cgroup namespace that path does not exist under the mount, whose root is then
    the container's own cgroup: so every ancestor, down to the mount root, is looked at."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    folders: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            mounts = [root]  # v2: one unified hierarchy
        elif "cpu" in controllers.split(","):
            mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct"]  # v1: the cpu controller's mount
        else:
            continue
        relative = Path(path.lstrip("/"))
        for mount in mounts:
            folders += [mount / ancestor for ancestor in (relative, *relative.parents)]
    return folders


def cgroup_cpu_limit(*, proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota, in CPUs (quota / period, e.g. 1.5), of this process's cgroup
    and its ancestors; None when there is none or it cannot be read (not Linux)."""
    quotas = [quota for folder in _cgroup_folders(proc_cgroup, root) if (quota := _read_quota(folder)) is not None]
    return min(quotas, default=None)


def available_cpus(*, proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded
    down, at least 1: a thread beyond the quota only adds throttling)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_limit(proc_cgroup=proc_cgroup, root=root)
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def omp_num_threads() -> int | None:
    """$OMP_NUM_THREADS as a positive number (its first level, as in "4,2"), or None."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        threads = int(value)
    except ValueError:
        return None
    return threads if threads > 0 else None


def choose_threads(requested: int | None = None, *, share: int = 1) -> ThreadChoice:
    """Compute threads for one process: ``requested`` (the --threads flag) when given, else
    $OMP_NUM_THREADS, else the available CPUs divided among ``share`` processes."""
    if requested:
        return ThreadChoice(requested, "--threads")
    from_environment = omp_num_threads()
    if from_environment is not None:
        return ThreadChoice(from_environment, "OMP_NUM_THREADS")
    return ThreadChoice(max(1, available_cpus() // max(1, share)), "available CPUs")


# The instruction-set features that change which kernels oneDNN runs, and so the speed
# (and, under bfloat16 autocast, whether it is used at all): figures from machines that
# differ in these are not comparable.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name and which of SPEED_FLAGS it has, read from /proc/cpuinfo
    (``{"model": None, "flags": []}`` where that file is not there)."""
    model: str | None = None
    flags: set[str] = set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model is not None and flags:
                    break  # every core repeats the same block
    except OSError:
        pass
    return {"model": model, "flags": [flag for flag in SPEED_FLAGS if flag in flags]}

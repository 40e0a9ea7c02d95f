"""Training uses the CPUs this process may run on, not os.cpu_count() (regression: it set
torch's threads to the machine's CPU count, overriding OMP_NUM_THREADS, taskset and
cgroup CPU quotas); --threads still wins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist.cpus import available_cpus, cgroup_cpu_limit, choose_threads


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_or_an_ancestor(tmp_path: Path):
    root = tmp_path / "cgroup"
    write(tmp_path / "proc-cgroup", "0::/user.slice/job\n")
    write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")  # unlimited itself
    write(root / "user.slice" / "cpu.max", "150000 100000\n")  # the parent allows 1.5 CPUs

    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "proc-cgroup", root=root) == pytest.approx(1.5)
    assert available_cpus(proc_cgroup=tmp_path / "proc-cgroup", root=root) == 1


def test_cgroup_v1_quota_and_a_container_without_a_cgroup_namespace(tmp_path: Path):
    root = tmp_path / "cgroup"
    # The path named in /proc/self/cgroup is not under the mount (the container's own
    # cgroup is the mount's root): the quota there is the one that counts.
    write(tmp_path / "proc-cgroup", "4:cpu,cpuacct:/docker/0123abcd\n3:memory:/docker/0123abcd\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")

    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "proc-cgroup", root=root) == pytest.approx(0.5)
    assert available_cpus(proc_cgroup=tmp_path / "proc-cgroup", root=root) == 1  # never 0


def test_no_quota_or_an_unreadable_cgroup_leaves_the_affinity_mask(tmp_path: Path):
    root = tmp_path / "cgroup"
    write(tmp_path / "proc-cgroup", "0::/\n")
    write(root / "cpu.max", "max 100000\n")
    write(tmp_path / "v1", "4:cpu,cpuacct:/\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")

    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "proc-cgroup", root=root) is None
    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "v1", root=root) is None
    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "missing", root=root) is None
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(proc_cgroup=tmp_path / "missing", root=root) == affinity


def test_choose_threads_order(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5) == choose_threads(5, share=4)
    assert (choose_threads(5).threads, choose_threads(5).source) == (5, "--threads")
    assert (choose_threads().threads, choose_threads().source) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested levels: the first is ours
    assert choose_threads().threads == 4
    for ignored in ("", "0", "lots"):
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert choose_threads().source == "available CPUs"
        assert choose_threads().threads == available_cpus()
        assert choose_threads(share=available_cpus() * 4).threads == 1


def torch_threads_for_training(command: list[str], env: dict[str, str], threads: int | None = None) -> int:
    """torch's thread count after the training loop set it up, in a fresh process."""
    code = (
        "import torch\n"
        "from fmnist.training import resolve_config\n"
        "from fmnist.training.loop import _set_threads\n"
        f"_set_threads(resolve_config('seed', overrides={{'threads': {threads}}}))\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run(
        [*command, sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_taskset_mask_is_respected_and_threads_still_win():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    assert torch_threads_for_training(["taskset", "-c", "0"], env) == 1
    assert torch_threads_for_training(["taskset", "-c", "0"], env, threads=2) == 2


def test_training_records_and_uses_omp_num_threads(tmp_path: Path, run_fmnist, learnable_dir: Path,
                                                   small_config: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    done = run_fmnist("train", "--config", str(small_config), "--data", str(learnable_dir), "--out", str(out),
                      "--epochs", "1", "--no-eval", "--quiet")
    assert done.returncode == 0, done.stderr
    run = json.loads((out / "run.json").read_text())
    assert (run["torch_threads"], run["torch_threads_from"]) == (1, "OMP_NUM_THREADS")
    assert run["cpus_available"] == available_cpus()

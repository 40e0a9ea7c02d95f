"""Output into a reader that went away (`fmnist models | head -1`) ends quietly: no
BrokenPipeError traceback, the status a shell reports for a tool stopped by SIGPIPE
(regression: every command piped into a closed reader ended in a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SIGPIPE_STATUS = 141


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m fmnist ARGS`` with stdout a pipe whose reading end is already closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "fmnist", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_closed_reader_ends_the_command_quietly(learnable_dir, fmt: str):
    done = run_into_closed_pipe("data", "info", "--data", str(learnable_dir), "--no-download", "--format", fmt)

    assert done.stderr == "", done.stderr
    assert done.returncode == SIGPIPE_STATUS


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["--version"]], ids=" ".join)
def test_help_into_a_closed_reader_is_quiet(args: list[str]):
    done = run_into_closed_pipe(*args)

    assert done.stderr == "", done.stderr
    assert done.returncode in (0, SIGPIPE_STATUS)  # argparse itself ignores a failed write of its help


def head_one(command: str) -> subprocess.CompletedProcess:
    """A real shell pipeline: head exits after one line, while fmnist may still be writing."""
    return subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m fmnist {command} | head -1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_head_reads_the_first_line_and_nothing_is_reported(learnable_dir):
    done = head_one(f"data info --data '{learnable_dir}' --no-download --format json")

    assert done.returncode == 0
    assert done.stdout == "{\n"
    assert done.stderr == "", done.stderr


@pytest.mark.slow  # `fmnist models` builds every registered model: seconds to tens of seconds
def test_the_issue_example_models_json_into_head():
    done = head_one("models --format json")
    assert done.stdout == "[\n" and done.stderr == "", done.stderr

    closed = run_into_closed_pipe("models", "--format", "json")
    assert closed.stderr == "" and closed.returncode == SIGPIPE_STATUS, closed.stderr

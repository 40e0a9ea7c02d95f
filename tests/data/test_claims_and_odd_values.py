"""Values that a file claims or a user types, each refused in one line and bounded memory:
a label of 10**12 in an .npz (a name was made for every class up to it), uint64 labels that
wrap negative, encrypted .npz members, CSV cells that are not UTF-8 or have thousands of
digits, config keys that are not names, settings past float range, folders nested
thousands deep, oversized run files, and an evaluation of a damaged run that writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from limited_process import run_fmnist_limited


def _npz(path: Path, labels: np.ndarray) -> Path:
    images = np.zeros((len(labels), 28, 28), np.uint8)
    np.savez(path, x_train=images, y_train=labels, x_test=images[:10], y_test=np.arange(10) % 2)
    return path


def _one_line(done, *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("fmnist: error: ")]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (np.full(60, 10**12, np.int64), "not a class number"),
        (np.full(60, 10**6, np.int64), "1,000,001 classes; fmnist trains on 2 to 100"),
        (np.full(60, 2**63 + 5, np.uint64), "not a class number"),
    ],
    ids=["huge", "million", "uint64-wraps"],
)
def test_npz_labels_that_claim_huge_class_counts(tmp_path: Path, labels: np.ndarray, fragment: str):
    path = _npz(tmp_path / "data.npz", labels)
    done = run_fmnist_limited("data", "info", "--no-download", "--data", str(path), cwd=tmp_path, timeout=60)
    _one_line(done, fragment)


def test_an_encrypted_npz_member_is_one_line(tmp_path: Path):
    path = _npz(tmp_path / "data.npz", np.arange(60) % 10)
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")  # the first central directory entry: its general-purpose flags
    while start != -1:
        flags = struct.unpack_from("<H", data, start + 8)[0]
        struct.pack_into("<H", data, start + 8, flags | 1)
        start = data.find(b"PK\x01\x02", start + 4)
    path.write_bytes(bytes(data))
    done = run_fmnist_limited("data", "info", "--no-download", "--data", str(path), cwd=tmp_path, timeout=60)
    _one_line(done, "encrypted")


@pytest.mark.parametrize(("cell", "fragment"), [(b"7\xe9", "not a whole number"), (b"9" * 5000, "not a whole number")])
def test_csv_cells_that_are_not_utf8_or_too_long(tmp_path: Path, data_files, cell: bytes, fragment: str):
    data = data_files.tiny(30, seed=0)
    path = data_files.csv(tmp_path / "fashion-mnist_train.csv", data)
    lines = path.read_bytes().split(b"\n")
    cells = lines[5].split(b",")
    cells[3] = cell
    lines[5] = b",".join(cells)
    path.write_bytes(b"\n".join(lines))
    done = run_fmnist_limited("data", "info", "--no-download", "--data", str(path), cwd=tmp_path, timeout=60)
    _one_line(done, "line 6", "pixel3", fragment)


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("int.yaml", "1: 2\n", "1 is not a setting name"),
        ("null.yaml", "null: 2\n", "None is not a setting name"),
        ("nested.yaml", "augment: {1: 2}\n", "not a setting name"),
        ("comma.json", '{"epochs": 1,}', "not valid JSON"),
    ],
)
def test_config_files_with_keys_that_are_not_names(tmp_path: Path, run_fmnist, name: str, text: str, fragment: str):
    (tmp_path / name).write_text(text)
    run_fmnist("train", "--config", str(tmp_path / name), "--print-config").error_line(fragment)


def test_a_strict_json_config_still_reads(tmp_path: Path, run_fmnist):
    (tmp_path / "ok.json").write_text('{"epochs": 2}')
    done = run_fmnist("train", "--config", str(tmp_path / "ok.json"), "--print-config")
    assert done.returncode == 0 and json.loads(done.stdout)["epochs"] == 2


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--set", "lr=1e308"], "at most 1e30"),
        (["--set", "weight_decay=1e300"], "at most 1e30"),
        (["--set", "device=potato"], "auto, cpu, cuda or cuda:N"),
        (["--seed", "-1"], "0 to 4294967295"),
        (["--seed", "4294967296"], "0 to 4294967295"),
        (["--set", "split_seed=4294967296"], "0 to 4294967295"),
    ],
)
def test_settings_past_what_training_can_use_leave_no_folder(tmp_path: Path, learnable_dir: Path, run_fmnist, flags, fragment):
    out = tmp_path / "run"
    run_fmnist("train", "--data", str(learnable_dir), "--out", str(out), "--epochs", "1", *flags).error_line(fragment)
    assert not out.exists()


def test_folders_nested_far_too_deep(tmp_path: Path, tiny_run: Path, learnable_writer, run_fmnist):
    from PIL import Image

    root = tmp_path / "images"
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.new("L", (28, 28), 0).save(root / split / name / "x.png")
    deep = str(root / "train" / "a")
    for _ in range(200):  # past the cap; os.mkdir one level at a time
        deep += "/d"
        os.mkdir(deep)
    Image.new("L", (28, 28), 0).save(deep + "/deep.png")
    run_fmnist("data", "info", "--no-download", "--data", str(root)).error_line("nested more than")
    done = run_fmnist("predict", str(tiny_run), str(root / "train"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "nested more than" in done.stderr and "x.png" in done.stdout


def test_an_oversized_run_file_is_refused_without_reading_it_whole(tiny_run: Path, tmp_path: Path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    with open(run / "run.json", "w") as handle:
        handle.write('{"a": "' + "x" * (40 << 20) + '"}')
    done = run_fmnist_limited("runs", str(tmp_path), cwd=tmp_path, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    done = run_fmnist_limited("evaluate", str(run), "--data", str(tiny_run.parent / "data"), cwd=tmp_path, timeout=60)
    _one_line(done, "run.json", "over")


def test_evaluating_a_damaged_run_writes_nothing(tiny_run: Path, tmp_path: Path, run_fmnist):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "run.json").write_text("{not json")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    run_fmnist("evaluate", str(run), "--data", str(tiny_run.parent / "data")).error_line("run.json")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before


def test_predict_says_standard_input_is_not_read(tiny_run: Path, run_fmnist):
    done = run_fmnist("predict", str(tiny_run), "-")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not read from standard input" in done.stderr


def test_an_interrupted_training_says_how_to_resume(tmp_path: Path, learnable_dir: Path, small_config: Path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "fmnist", "train", "--config", str(small_config), "--data", str(learnable_dir),
         "--out", str(out), "--epochs", "500", "--quiet"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not (out / "epochs.jsonl").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"fmnist train --resume {out}" in stderr and "Traceback" not in stderr, stderr


def _image_tree(root: Path, layout: dict[str, list[str]]) -> Path:
    from PIL import Image

    for split, names in layout.items():
        for name in names:
            (root / split / name).mkdir(parents=True)
            Image.new("L", (28, 28), 0).save(root / split / name / "x.png")
    return root


def test_class_folders_spelled_with_other_unicode_are_named_as_such(tmp_path: Path, run_fmnist):
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    root = _image_tree(tmp_path / "images", {"train": [composed, "tea"], "test": [decomposed, "tea"]})
    run_fmnist("data", "info", "--no-download", "--data", str(root)).error_line("other Unicode characters")


def test_a_class_named_in_classes_txt_without_training_images_is_warned_about(tmp_path: Path, run_fmnist):
    root = _image_tree(tmp_path / "images", {"train": ["a", "b"], "test": ["a", "b"]})
    (root / "classes.txt").write_text("a\nb\nc\n")
    done = run_fmnist("data", "info", "--no-download", "--data", str(root))
    assert done.returncode == 0, done.stderr
    assert "no training images for 'c'" in done.stderr

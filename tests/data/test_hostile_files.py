"""Hostile data files are refused in one line, in bounded memory and time.

Each bomb runs `fmnist data info --data FOLDER` in a subprocess under an address-space
limit (limited_process.MEMORY_LIMIT) and a timeout, so a reader that inflates or reads a
whole file before checking its size fails with MemoryError instead of taking the machine,
and one that blocks on a FIFO fails instead of hanging. The files inflate to 4 GiB but
are a few MB on disk (repeated gzip members) or sparse.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from limited_process import (
    BOMB_BYTES,
    MEMORY_LIMIT,
    permissions_apply,
    run_fmnist_limited,
    run_limited,
    write_gzip_bomb,
)

from fmnist.data.limits import DEFAULT_MAX_IMAGES, MAX_CSV_LINE_BYTES

UNIT = 16 << 20  # bytes of each repeated gzip member, inflated
# The CSV bound, lowered so that reaching it inflates ~30 MB rather than ~0.5 GB (a few
# seconds); the default bound is the same code with a larger number.
FAST_ROW_LIMIT = 20_000
CSV_HEADER = ("label," + ",".join(f"pixel{i}" for i in range(1, 785)) + "\n").encode()
ZERO_ROW = ("0," * 784 + "0\n").encode()


def idx_header(*dims: int) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(size.to_bytes(4, "big") for size in dims)


def good_test_split(folder: Path, files) -> None:
    files.idx_split(folder, files.tiny(10, seed=1), split="test")


Bomb = Callable[[Path, object], tuple[Path, str]]
BOMBS: dict[str, Bomb] = {}


def bomb(name: str) -> Callable[[Bomb], Bomb]:
    def register(build: Bomb) -> Bomb:
        BOMBS[name] = build
        return build

    return register


@bomb("idx-gzip-of-zeros-without-header")
def _(folder, files):
    good_test_split(folder, files)
    files.idx(folder / "train-labels-idx1-ubyte.gz", files.tiny(50).labels)
    images = write_gzip_bomb(folder / "train-images-idx3-ubyte.gz", b"", bytes(UNIT))
    return images, "wrong IDX magic number 0x00000000"


@bomb("idx-gzip-with-data-after-the-promised-images")
def _(folder, files):
    good_test_split(folder, files)
    files.idx(folder / "train-labels-idx1-ubyte.gz", files.tiny(50).labels)
    images = write_gzip_bomb(folder / "train-images-idx3-ubyte.gz", idx_header(50, 28, 28), bytes(UNIT))
    return images, f"unexpected bytes after the {50 * 28 * 28:,} bytes of data"


@bomb("idx-gzip-labels-with-data-after-the-promised-labels")
def _(folder, files):
    good_test_split(folder, files)
    files.idx(folder / "train-images-idx3-ubyte.gz", files.tiny(50).images)
    labels = write_gzip_bomb(folder / "train-labels-idx1-ubyte.gz", idx_header(50), bytes(UNIT))
    return labels, "unexpected bytes after the 50 bytes of data"


@bomb("idx-gzip-header-claiming-too-many-images")
def _(folder, files):
    good_test_split(folder, files)
    files.idx(folder / "train-labels-idx1-ubyte.gz", files.tiny(50).labels)
    claimed = 20 * DEFAULT_MAX_IMAGES
    images = write_gzip_bomb(folder / "train-images-idx3-ubyte.gz", idx_header(claimed, 28, 28), bytes(UNIT))
    return images, f"claims {claimed:,} images, more than the limit of {FAST_ROW_LIMIT:,}"


@bomb("idx-uncompressed-far-larger-than-its-header")
def _(folder, files):
    good_test_split(folder, files)
    files.idx(folder / "train-labels-idx1-ubyte", files.tiny(50).labels)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(idx_header(50, 28, 28))
    os.truncate(images, BOMB_BYTES)  # sparse: 4 GiB of zeros that take no disk
    return images, f"{BOMB_BYTES - 16 - 50 * 28 * 28:,} unexpected bytes after the data"


@bomb("csv-gzip-with-millions-of-valid-rows")
def _(folder, files):
    good_test_split(folder, files)
    csv = write_gzip_bomb(folder / "fashion-mnist_train.csv.gz", CSV_HEADER, ZERO_ROW * (UNIT // len(ZERO_ROW)))
    return csv, f"more than {FAST_ROW_LIMIT:,} rows"


@bomb("csv-gzip-flooded-with-blank-lines")
def _(folder, files):
    good_test_split(folder, files)
    csv = write_gzip_bomb(folder / "fashion-mnist_train.csv.gz", CSV_HEADER + ZERO_ROW, b"\n" * UNIT)
    return csv, f"more than {FAST_ROW_LIMIT:,} rows"


@bomb("csv-gzip-one-endless-line")
def _(folder, files):
    good_test_split(folder, files)
    csv = write_gzip_bomb(folder / "fashion-mnist_train.csv.gz", CSV_HEADER, b"0" * UNIT)
    return csv, f"line 2 is longer than {MAX_CSV_LINE_BYTES:,} bytes"


@pytest.fixture(params=sorted(BOMBS))
def data_bomb(request, tmp_path, data_files):
    folder = tmp_path / "bomb"
    folder.mkdir()
    named, fragment = BOMBS[request.param](folder, data_files)
    return folder, named, fragment


def test_data_bombs_are_refused_in_bounded_memory(data_bomb, tmp_path):
    folder, named, fragment = data_bomb

    done = run_fmnist_limited(
        "data", "info", "--data", str(folder), "--no-download", cwd=tmp_path, env={"FMNIST_MAX_IMAGES": str(FAST_ROW_LIMIT)}
    )

    done.error_line(str(named), fragment)


@pytest.mark.parametrize(
    "name",
    ["idx-gzip-header-claiming-too-many-images", pytest.param("csv-gzip-with-millions-of-valid-rows", marks=pytest.mark.slow)],
)
def test_the_default_bound_holds(tmp_path, data_files, name):
    folder = tmp_path / "bomb"
    folder.mkdir()
    named, fragment = BOMBS[name](folder, data_files)

    done = run_fmnist_limited("data", "info", "--data", str(folder), "--no-download", cwd=tmp_path)

    done.error_line(str(named), fragment.replace(f"{FAST_ROW_LIMIT:,}", f"{DEFAULT_MAX_IMAGES:,}"))


def test_running_out_of_memory_is_one_line(tmp_path, data_files):
    # Within a raised bound, a file can still need more memory than there is: the
    # MemoryError becomes a one-line DataError naming the file.
    folder = tmp_path / "big"
    folder.mkdir()
    good_test_split(folder, data_files)
    claimed = MEMORY_LIMIT // (28 * 28) + 1  # more pixels than the address space allows
    data_files.idx(folder / "train-labels-idx1-ubyte.gz", data_files.tiny(50).labels)
    images = write_gzip_bomb(folder / "train-images-idx3-ubyte.gz", idx_header(claimed, 28, 28), bytes(UNIT))

    done = run_fmnist_limited(
        "data", "info", "--data", str(folder), "--no-download", cwd=tmp_path, env={"FMNIST_MAX_IMAGES": str(2 * claimed)}
    )

    done.error_line(str(images), "not enough memory")


def test_max_images_can_be_raised_and_lowered(tmp_path, data_files, run_fmnist, monkeypatch):
    data_files.idx_split(tmp_path / "d", data_files.tiny(50), split="train")
    data_files.idx_split(tmp_path / "d", data_files.tiny(20), split="test")

    monkeypatch.setenv("FMNIST_MAX_IMAGES", "40")
    run_fmnist("data", "info", "--data", str(tmp_path / "d")).error_line(
        "claims 50 images, more than the limit of 40", "FMNIST_MAX_IMAGES"
    )
    monkeypatch.setenv("FMNIST_MAX_IMAGES", "lots")
    run_fmnist("data", "info", "--data", str(tmp_path / "d")).error_line("$FMNIST_MAX_IMAGES must be a whole number")
    monkeypatch.setenv("FMNIST_MAX_IMAGES", "50")
    assert run_fmnist("data", "info", "--data", str(tmp_path / "d")).returncode == 0


def test_csv_row_bound_counts_rows_not_bytes(tmp_path, data_files, monkeypatch):
    from fmnist.data.kaggle_csv import read_kaggle_csv
    from fmnist.errors import DataError

    path = data_files.csv(tmp_path / "train.csv", data_files.tiny(30))

    assert len(read_kaggle_csv(path, max_rows=30)[0]) == 30
    with pytest.raises(DataError, match="more than 29 rows"):
        read_kaggle_csv(path, max_rows=29)
    # CRLF and CR line ends count once per line, as pyarrow reads them.
    text = path.read_bytes()
    for ending in (b"\r\n", b"\r"):
        path.write_bytes(text.replace(b"\n", ending))
        assert len(read_kaggle_csv(path, max_rows=30)[0]) == 30


# -- FIFOs and devices ---------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("fifo", "not a folder or a regular file but a FIFO"), ("/dev/zero", "but a character device")],
)
def test_a_fifo_or_device_as_data_is_refused(tmp_path, fifo, name, fragment):
    data = str(fifo) if name == "fifo" else name

    run_fmnist_limited("data", "info", "--data", data, "--no-download", cwd=tmp_path).error_line(data, fragment)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "fashion-mnist_train.csv"])
def test_a_fifo_under_a_data_file_name_is_refused(tmp_path, data_files, name):
    folder = tmp_path / "with-fifo"
    good_test_split(folder, data_files)
    if name.startswith("train-images"):
        data_files.idx(folder / "train-labels-idx1-ubyte.gz", data_files.tiny(50).labels)
    os.mkfifo(folder / name)

    done = run_fmnist_limited("data", "info", "--data", str(folder), "--no-download", cwd=tmp_path)

    done.error_line(str(folder / name), "not a regular file but a FIFO")


@pytest.mark.parametrize(
    "call",
    [
        "from fmnist.data.idx import read_idx; read_idx(path, kind='images')",
        "from fmnist.data.idx import read_content; read_content(path)",
        "from fmnist.data.kaggle_csv import read_kaggle_csv; read_kaggle_csv(path)",
    ],
    ids=["read_idx", "read_content", "read_kaggle_csv"],
)
@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_readers_refuse_fifos_and_devices_without_blocking(tmp_path, fifo, call, target):
    # Regression: open() of a FIFO blocked until a writer came; /dev/zero was read forever.
    path = str(fifo) if target == "fifo" else target
    code = f"import sys; from pathlib import Path; path = Path(sys.argv[1]); {call}"
    done = run_limited(["-c", code, path], cwd=tmp_path, timeout=30)

    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fmnist.errors.DataError: ") and "not a regular file" in last, done.stderr[-2000:]


# -- permissions ---------------------------------------------------------------------------
@pytest.fixture
def unprivileged(tmp_path):
    if not permissions_apply(tmp_path):
        pytest.skip("this process cannot drop the power to read unreadable files (root without setpriv/CAP_SETPCAP)")


def _restore(path: Path, mode: int):
    return lambda: path.chmod(mode)


@pytest.mark.parametrize(
    ("target", "mode"),
    [("folder", 0o000), ("folder", 0o600), ("images", 0o000), ("csv", 0o000)],
    ids=["folder-000", "folder-not-searchable", "data-file-000", "csv-000"],
)
def test_unreadable_data_is_one_line(tmp_path, data_files, unprivileged, request, target, mode):
    folder = tmp_path / "private"
    if target == "csv":
        data_files.csv_split(folder, data_files.tiny(50), split="train")
        data_files.csv_split(folder, data_files.tiny(10), split="test")
        locked = folder / "fashion-mnist_train.csv"
    else:
        good_test_split(folder, data_files)
        data_files.idx_split(folder, data_files.tiny(50), split="train")
        locked = folder if target == "folder" else folder / "train-images-idx3-ubyte.gz"
    locked.chmod(mode)
    request.addfinalizer(_restore(locked, 0o755))

    done = run_fmnist_limited("data", "info", "--data", str(folder), "--no-download", cwd=tmp_path, unprivileged=True)

    line = done.error_line("permission denied")
    assert str(folder) in line


def test_a_folder_that_can_be_searched_but_not_listed_is_read(tmp_path, data_files, unprivileged, request):
    # The data files are looked up by name: search (x) permission is enough.
    folder = tmp_path / "search-only"
    good_test_split(folder, data_files)
    data_files.idx_split(folder, data_files.tiny(50), split="train")
    folder.chmod(0o100)
    request.addfinalizer(_restore(folder, 0o755))

    done = run_fmnist_limited("data", "info", "--data", str(folder), "--no-download", cwd=tmp_path, unprivileged=True)

    assert done.returncode == 0, done.stderr
    assert "50 images" in done.stdout


def test_permission_errors_anywhere_are_one_line_at_the_cli(tmp_path, data_files, unprivileged, request):
    # A path no reader checks (here the cache folder, written by the loader) still gives one
    # line naming the path, not a PermissionError traceback.
    data_files.idx_split(tmp_path / "d", data_files.tiny(50), split="train")
    data_files.idx_split(tmp_path / "d", data_files.tiny(10), split="test")
    cache = tmp_path / "locked-cache"
    (cache / "arrays").mkdir(parents=True)
    cache.chmod(0o500)
    request.addfinalizer(_restore(cache, 0o755))

    done = run_fmnist_limited(
        "data", "export-csv", str(cache / "out"), "--data", str(tmp_path / "d"), cwd=tmp_path, unprivileged=True,
        env={"FMNIST_CACHE": str(cache)},
    )  # fmt: skip

    done.error_line("permission denied", str(cache / "out"))


def test_bombs_are_small_on_disk(tmp_path):
    # The fixtures above must not fill the disk: a 4 GiB bomb is a few MB.
    path = write_gzip_bomb(tmp_path / "b.gz", b"", bytes(UNIT))
    assert path.stat().st_size < BOMB_BYTES // 500
    with gzip.open(path, "rb") as stream:
        assert stream.read(UNIT + 1) == bytes(UNIT + 1)


def test_subprocess_limits_are_real(tmp_path):
    # The guard the bomb tests rely on: a child that allocates past the limit fails.
    done = run_limited(["-c", f"bytearray({MEMORY_LIMIT})"], cwd=tmp_path)
    assert done.returncode != 0 and "MemoryError" in done.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        run_limited(["-c", "import time; time.sleep(5)"], cwd=tmp_path, timeout=0.5)

"""Downloading from a real HTTP server on 127.0.0.1.

The official checksums are of the real files, so the tests that download need the real
dataset (the real_fmnist_dir fixture skips them where it is not installed); it is served
from a local folder, so a download takes well under a second.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from fmnist.data import cache_data_dir, load, load_split
from fmnist.data.download import download_official, is_verified_copy
from fmnist.data.official import OFFICIAL_FILES
from fmnist.errors import DataError

NAMES = [official.name for official in OFFICIAL_FILES]
OFFICIAL = {official.name: official for official in OFFICIAL_FILES}


def serve(mirror, real_dir: Path, **replaced: bytes) -> None:
    """Serve the real files (as symlinks), with some names replaced by other bytes."""
    for name in NAMES:
        if name not in replaced:
            (mirror.folder / name).symlink_to(real_dir / name)
    for name, content in replaced.items():
        (mirror.folder / name).write_bytes(content)


def leftovers(folder: Path) -> list[str]:
    """Temporary or hidden files a failed download might leave."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".") or path.suffix == ".tmp")


def download(**kwargs) -> list[str]:
    return download_official(cache_data_dir(), progress=False, **kwargs)


def test_good_files_are_downloaded_verified_and_kept(real_fmnist_dir, mirror):
    serve(mirror, real_fmnist_dir)

    actions = download()

    assert actions == [f"{name}: downloaded from {mirror.url}" for name in NAMES]
    for name in NAMES:
        assert is_verified_copy(cache_data_dir() / name, OFFICIAL[name])
    assert leftovers(cache_data_dir()) == []
    served = len(mirror.requests)
    assert download() == [f"{name}: already verified" for name in NAMES]
    assert len(mirror.requests) == served
    assert load("test").source.origin == "cache"


def test_download_is_the_last_resort_of_the_search(real_fmnist_dir, mirror):
    serve(mirror, real_fmnist_dir)

    loaded = load("test")

    assert loaded.source.origin == "download" and loaded.official
    assert loaded.images.shape == (10_000, 28, 28)


def test_fetch_command_downloads_and_says_so(real_fmnist_dir, mirror, run_fmnist):
    serve(mirror, real_fmnist_dir)

    result = run_fmnist("data", "fetch")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [f"{name}: downloaded from {mirror.url}" for name in NAMES] + [
        f"verified copy in {cache_data_dir()}"
    ]
    assert "Traceback" not in result.stderr


def test_fetch_copies_a_verified_system_copy_instead_of_downloading(real_fmnist_dir, mirror, monkeypatch, run_fmnist):
    monkeypatch.setenv("FMNIST_SYSTEM_DATA", str(real_fmnist_dir))

    result = run_fmnist("data", "fetch", "--quiet")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [f"{name}: copied from {real_fmnist_dir}" for name in NAMES]
    assert mirror.requests == []


def test_the_next_mirror_is_tried_when_one_fails(real_fmnist_dir, mirror, monkeypatch, unreachable_url):
    serve(mirror, real_fmnist_dir)
    monkeypatch.setenv("FMNIST_MIRROR", f"{unreachable_url}, {mirror.url}nothing-here ,{mirror.url}")

    actions = download()

    assert actions == [f"{name}: downloaded from {mirror.url}" for name in NAMES]
    assert f"/nothing-here/{NAMES[0]}" in mirror.requests  # the 404 was tried, then skipped


@pytest.mark.parametrize(
    ("name", "how", "fragment"),
    [
        ("train-images-idx3-ubyte.gz", "truncated file", "is corrupt: the gzip stream is truncated"),
        ("t10k-labels-idx1-ubyte.gz", "truncated file", "is corrupt: the gzip stream is truncated"),
        ("t10k-labels-idx1-ubyte.gz", "connection closed early", "was cut short (2,562 of 5,125 bytes)"),
    ],
)
def test_a_truncated_download_is_refused_and_leaves_nothing(real_fmnist_dir, mirror, name, how, fragment):
    original = (real_fmnist_dir / name).read_bytes()
    if how == "truncated file":
        serve(mirror, real_fmnist_dir, **{name: original[: len(original) // 2]})
    else:
        serve(mirror, real_fmnist_dir)
        mirror.cut_short.add(name)

    with pytest.raises(DataError) as caught:
        download()

    assert f"the download of {name} from {mirror.url}{name}" in str(caught.value)
    assert fragment in str(caught.value)
    assert not (cache_data_dir() / name).exists()
    assert leftovers(cache_data_dir()) == []


def test_fetch_command_reports_a_truncated_download(real_fmnist_dir, mirror, run_fmnist):
    name = "train-labels-idx1-ubyte.gz"
    serve(mirror, real_fmnist_dir, **{name: (real_fmnist_dir / name).read_bytes()[:1000]})

    run_fmnist("data", "fetch").error_line(f"the download of {name}", "truncated")

    assert not (cache_data_dir() / name).exists()
    assert leftovers(cache_data_dir()) == []


def altered(path: Path) -> bytes:
    """The file's content with one byte changed, recompressed."""
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] ^= 0x01
    return gzip.compress(bytes(content))


@pytest.mark.parametrize(
    ("name", "make", "fragment"),
    [
        (
            "train-images-idx3-ubyte.gz",
            lambda real: (real / "t10k-images-idx3-ubyte.gz").read_bytes(),
            "has the wrong content (SHA-256",
        ),
        ("t10k-labels-idx1-ubyte.gz", lambda real: altered(real / "t10k-labels-idx1-ubyte.gz"), "has the wrong content"),
        # Regression: the check read the temporary file (named *.tmp) and so accepted
        # uncompressed content, which was then stored under the .gz name, where the
        # reader refuses it.
        (
            "t10k-labels-idx1-ubyte.gz",
            lambda real: gzip.decompress((real / "t10k-labels-idx1-ubyte.gz").read_bytes()),
            "not gzip data",
        ),
    ],
    ids=["test-images-as-train-images", "one-byte-altered", "uncompressed"],
)
def test_wrong_content_is_refused_and_not_kept(real_fmnist_dir, mirror, name, make, fragment):
    serve(mirror, real_fmnist_dir, **{name: make(real_fmnist_dir)})

    with pytest.raises(DataError) as caught:
        download()

    assert f"the download of {name} from {mirror.url}{name}" in str(caught.value)
    assert fragment in str(caught.value)
    assert not (cache_data_dir() / name).exists()
    assert leftovers(cache_data_dir()) == []


def test_recompressed_files_with_the_same_content_are_accepted(real_fmnist_dir, mirror):
    # Debian's package recompresses the files: other gzip bytes, the same content.
    names = ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    recompressed = {
        name: gzip.compress(gzip.decompress((real_fmnist_dir / name).read_bytes()), compresslevel=1, mtime=0)
        for name in names
    }
    for name in names:
        assert recompressed[name] != (real_fmnist_dir / name).read_bytes()
    serve(mirror, real_fmnist_dir, **recompressed)

    actions = download()

    assert actions == [f"{name}: downloaded from {mirror.url}" for name in NAMES]
    for name in names:
        assert (cache_data_dir() / name).read_bytes() == recompressed[name]
        assert is_verified_copy(cache_data_dir() / name, OFFICIAL[name])


def test_no_mirror_has_the_files(mirror):
    with pytest.raises(DataError, match="no Fashion-MNIST data found and it could not be downloaded") as caught:
        download()

    # The reason is the server's ("File not found" from http.server).
    assert f"{mirror.url}train-images-idx3-ubyte.gz: File not found" in str(caught.value)


NO_DATA_FRAGMENTS = (
    "no Fashion-MNIST data found and it could not be downloaded",
    "apt install dataset-fashion-mnist",
    "https://github.com/zalandoresearch/fashion-mnist",
    "fashion-mnist_train.csv",
    "--data FOLDER",
    "FMNIST_DATA=FOLDER",
)


def test_unreachable_server_and_no_system_copy(isolated_fmnist_cache):
    with pytest.raises(DataError) as caught:
        load_split("train")

    message = str(caught.value)
    for fragment in NO_DATA_FRAGMENTS:
        assert fragment in message, (fragment, message)
    assert str(cache_data_dir()) in message
    assert "refused" in message.lower()  # the reason names what went wrong
    assert leftovers(cache_data_dir()) == []


@pytest.mark.parametrize("command", [["data", "info"], ["data", "fetch"]])
def test_cli_with_unreachable_server_and_no_system_copy(run_fmnist, command):
    run_fmnist(*command).error_line(*NO_DATA_FRAGMENTS)


def test_info_command_downloads_when_nothing_is_found(real_fmnist_dir, mirror, run_fmnist):
    serve(mirror, real_fmnist_dir)

    result = run_fmnist("data", "info")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"source   {cache_data_dir()}  (downloaded just now)"
    assert result.stdout.count("official Fashion-MNIST content") == 2
    # Regression: progress bars were drawn even when stderr is not a terminal.
    assert result.stderr == ""


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-content-length"])
def test_a_download_larger_than_the_file_can_be_is_stopped(real_fmnist_dir, mirror, announced):
    # A mirror sending far more than the official file (by mistake or without end) is cut
    # off at the most a gzip of the content can be, before it fills the disk.
    from fmnist.data import download as download_module

    labels = OFFICIAL["t10k-labels-idx1-ubyte.gz"]
    limit = download_module.max_download_bytes(labels)
    serve(mirror, real_fmnist_dir, **{labels.name: bytes(4 * limit)})
    if not announced:
        mirror.unannounced.add(labels.name)

    with pytest.raises(DataError, match=f"{labels.name} from .* is larger than the file can be") as caught:
        download()

    assert f"over {limit:,}" in str(caught.value)
    assert leftovers(cache_data_dir()) == [] and not (cache_data_dir() / labels.name).exists()

"""Small image files that cost far more to read than their pixels (inflated text, repeated
JPEG scans, BMPs that Pillow decodes in Python) are refused from their headers, in
`fmnist predict` as in the server (tests/serving/test_uploads.py)."""

from __future__ import annotations

import io
import json
import time

import pytest
from costly_images import bmp_with_width, jpeg_with_scans, png_with_text, rle_bmp
from PIL import Image

from fmnist.errors import DataError
from fmnist.inference.photo import (
    MAX_JPEG_SCANS,
    RLE_BMP_COST,
    ImageTooCostlyError,
    count_jpeg_scans,
    decode_cost,
    open_header,
    open_image,
)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (png_with_text(3), "text metadata is over the limit of 1 MB"),
        (jpeg_with_scans(MAX_JPEG_SCANS + 1), f"over {MAX_JPEG_SCANS} scans"),
        (rle_bmp(300, 300), "RLE-compressed BMP of 90,000 pixels"),
    ],
    ids=["png-text", "jpeg-scans", "rle-bmp"],
)
def test_costly_files_are_refused_from_the_header(data: bytes, fragment: str):
    started = time.perf_counter()
    with pytest.raises(ImageTooCostlyError, match=fragment) as refused:
        open_header(io.BytesIO(data), "upload", max_pixels=1_000_000)
    assert time.perf_counter() - started < 2  # nothing costly was done before the refusal
    assert refused.value.fix  # each names what to send instead


def test_their_modest_versions_still_open():
    for data in (png_with_text(0), jpeg_with_scans(10), rle_bmp(100, 100)):
        image = open_image(data, max_pixels=1_000_000)
        assert image.size[0] > 0


def test_an_rle_bmp_counts_for_more_than_its_pixels():
    plain = Image.open(io.BytesIO(bmp_with_width(10)))
    rle = Image.open(io.BytesIO(rle_bmp(10, 4)))
    assert decode_cost(plain) == 40 and decode_cost(rle) == 40 * RLE_BMP_COST
    # Under the pixel limit as pixels, over it as cost: refused; as pixels alone it passes.
    with pytest.raises(ImageTooCostlyError):
        open_header(io.BytesIO(rle_bmp(100, 100)), "x", max_pixels=100 * 100 * RLE_BMP_COST - 1)
    open_header(io.BytesIO(rle_bmp(100, 100)), "x", max_pixels=100 * 100 * RLE_BMP_COST)


def test_scan_markers_split_between_reads_are_counted_and_the_position_kept():
    data = bytearray(b"\0" * (3 << 20))
    for position in ((1 << 20) - 1, 5, (2 << 20) + 7):  # the first across the 1 MB read boundary
        data[position : position + 2] = b"\xff\xda"
    handle = io.BytesIO(bytes(data))
    handle.seek(123)
    assert count_jpeg_scans(handle, stop_after=100) == 3
    assert handle.tell() == 123
    assert count_jpeg_scans(io.BytesIO(b"\xff\xda" * 500), stop_after=10) > 10


def test_a_negative_bmp_width_is_refused_not_decoded():
    with pytest.raises(DataError):
        open_header(io.BytesIO(bmp_with_width(-10)), "x", max_pixels=1_000_000)


def test_predict_refuses_each_costly_photo_in_one_line_and_predicts_the_rest(tiny_run, tmp_path, run_fmnist):
    files = {"text.png": png_with_text(3), "scans.jpg": jpeg_with_scans(MAX_JPEG_SCANS + 1), "slow.bmp": rle_bmp(2000, 2000)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    good = tmp_path / "good.png"
    Image.new("L", (28, 28), 0).save(good)
    done = run_fmnist("predict", str(tiny_run), *(str(tmp_path / n) for n in files), str(good), "--format", "json")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert [row["path"] for row in json.loads(done.stdout)] == [str(good)]
    errors = [line for line in done.stderr.splitlines() if line.startswith("fmnist: error: ")]
    assert len(errors) == 3, done.stderr
    for line, fragment in zip(errors, ("text metadata", "scans", "RLE-compressed BMP")):
        assert fragment in line, line


def test_a_float_image_of_nan_reads_as_black_without_a_warning(tmp_path, recwarn):
    import numpy as np

    from fmnist.inference.standalone_photo import rgba

    levels = np.full((8, 8), np.nan, np.float32)
    levels[0, 0] = 1.0
    path = tmp_path / "nan.tiff"
    Image.fromarray(levels, mode="F").save(path)
    pixels = rgba(open_image(path))
    assert pixels[0, 0, 0] == 255 and pixels[1:, :, :3].max() == 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]

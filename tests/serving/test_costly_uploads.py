"""Uploads that are cheap to send and costly to read, and multipart bodies that hit a limit
or stop short: each a 4xx JSON reply naming the cause, over real HTTP.

The shared server: 1 MB uploads, 4 files, 250,000 pixels per image (500,000 a request)."""

from __future__ import annotations

import asyncio

import pytest
from costly_images import jpeg_with_scans, png_with_text, rle_bmp
from live_server import learnable_images, multipart, png
from test_uploads import refused

from fmnist.inference.photo import MAX_JPEG_SCANS
from fmnist.serving.decoding import DecodePool
from fmnist.serving.uploads import RequestRefused


@pytest.fixture(scope="module")
def good_png(tiny_run) -> bytes:
    images, _ = learnable_images(tiny_run)
    return png(images[0])


def test_inflated_png_text_is_refused(server):
    # 64 such files held 4 GB in the server before the text limit.
    refused(server.predict([("file", "notes.png", png_with_text(2))]), 422, "text metadata", "notes.png")


def test_repeated_jpeg_scans_are_refused(server):
    refused(server.predict([("file", "scans.jpg", jpeg_with_scans(MAX_JPEG_SCANS + 1))]), 422, "scans")
    assert server.predict([("file", "ok.jpg", jpeg_with_scans(5))]).status == 200


def test_rle_bmps_count_sixteen_times_their_pixels(server):
    refused(server.predict([("file", "slow.bmp", rle_bmp(200, 200))]), 422, "RLE-compressed BMP")  # 40,000 x 16
    assert server.predict([("file", "small.bmp", rle_bmp(100, 100))]).status == 200
    # Each 120x120 passes alone (230,400 as cost); four are over the request's 500,000.
    document = refused(server.predict([("file", f"{i}.bmp", rle_bmp(120, 120)) for i in range(4)]), 413, "together")
    assert "RLE" in document["error"]


def test_a_multipart_body_cut_short_is_called_incomplete(server, good_png):
    body, content_type = multipart([("file", "a.png", good_png)])
    headers = {"Content-Type": content_type}
    for cut in (body[:-10], body[: len(body) // 2]):  # no closing boundary; cut inside the file
        refused(server.request("POST", "/v1/predict", cut, headers), 400, "incomplete")
    assert server.request("POST", "/v1/predict", body, headers).status == 200


def test_multipart_limits_are_named(server, good_png):
    texts = [("note", "", b"x")] * 17
    body, content_type = multipart(texts)
    refused(server.request("POST", "/v1/predict", body, {"Content-Type": content_type}), 413, "text fields")
    refused(server.predict([("file", "a" * 8000 + ".png", good_png)]), 413, "header line", "4 KB")


def test_a_client_that_left_while_waiting_costs_no_decoding():
    calls: list[int] = []

    async def scenario() -> None:
        pool = DecodePool(1, wait_s=1)
        pool.start()

        async def gone() -> bool:
            return True

        async def here() -> bool:
            return False

        try:
            with pytest.raises(RequestRefused, match="disconnected"):
                await pool.run(calls.append, 1, abandoned=gone)
            assert await pool.run(lambda: calls.append(2) or "done", abandoned=here) == "done"
        finally:
            pool.stop()

    asyncio.run(scenario())
    assert calls == [2]

"""Every limit and malformed request is a 4xx JSON {"error", "fix"} over real HTTP, never a 500.

The server runs with 1 MB uploads, 4 files per request and 250,000 pixels per image."""

from __future__ import annotations

import http.client
import io
import struct
import zlib

import numpy as np
import pytest
from live_server import learnable_images, multipart, png
from PIL import Image


def refused(reply, status: int, *fragments: str) -> dict:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    document = reply.json()
    assert set(document) == {"error", "fix"}, document
    assert "Traceback" not in document["error"]
    for fragment in fragments:
        assert fragment in document["error"], (fragment, document)
    return document


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with no pixel data: a bomb's first bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def good_png(tiny_run) -> bytes:
    images, _ = learnable_images(tiny_run)
    return png(images[0])


def test_body_over_the_upload_limit(server):
    noise = np.random.default_rng(0).integers(0, 256, (700, 700), dtype=np.uint8)  # ~490 KB PNG
    body, content_type = multipart([("file", "big.png", png(noise))] * 3)
    assert len(body) > 1024 * 1024
    refused(server.request("POST", "/v1/predict", body, {"Content-Type": content_type}), 413, "1 MB")


def test_chunked_body_over_the_upload_limit(server):
    """No Content-Length: the size is counted while the body streams in."""
    body, content_type = multipart([("file", "big.bin", b"\0" * (1024 * 1024 + 10))])
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
    connection.request("POST", "/v1/predict", body=chunks, headers={"Content-Type": content_type}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413, response.read()
    connection.close()


def test_image_over_the_pixel_limit(server):
    photo = Image.new("RGB", (600, 600), "white")  # 360,000 pixels > 250,000
    refused(server.predict([("file", "wide.png", png(photo))]), 413, "360,000 pixels", "250,000")


def test_pixels_of_a_whole_request(server):
    """Each image is under 250,000 pixels, but a request holds at most 500,000 together."""
    photo = png(Image.new("RGB", (400, 400), "white"))  # 160,000 pixels
    assert server.predict([("file", f"{i}.png", photo) for i in range(3)]).status == 200
    refused(server.predict([("file", f"{i}.png", photo) for i in range(4)]), 413, "640,000 pixels together", "500,000")


def test_decompression_bomb_is_refused_from_its_header(server):
    refused(server.predict([("file", "bomb.png", png_header_only(100_000, 100_000))]), 413, "over the limit")
    # Under Pillow's own bomb limit our count is exact; above it Pillow refuses before we can count.
    refused(server.predict([("file", "bomb.png", png_header_only(1_000, 1_000))]), 413, "1,000,000 pixels", "250,000")


def test_non_image_empty_and_truncated_files(server, good_png):
    refused(server.predict([("file", "notes.txt", b"just some text")]), 415, "not a supported image")
    refused(server.predict([("file", "empty.png", b"")]), 400, "empty")
    refused(server.predict([("file", "half.png", good_png[: len(good_png) // 2])]), 422, "half.png")
    # The bad file is named by its position, even after good ones.
    refused(server.predict([("file", "a.png", good_png), ("file", "b.txt", b"??")]), 415, "file 2", "b.txt")


def test_wrong_field_names_and_text_fields(server, good_png):
    document = refused(server.predict([("image", "a.png", good_png)]), 422, "'file'", "'image'")
    assert "-F file=@" in document["fix"]
    refused(server.predict([("file", "a.png", good_png), ("extra", "", b"1")]), 422, "'extra'")
    refused(server.predict([("file", "", b"a.png")]), 422, "text, not a file")
    refused(server.predict([]), 422, "no fields")


def test_too_many_files(server, good_png):
    refused(server.predict([("file", f"{i}.png", good_png) for i in range(5)]), 413, "too many files")
    assert server.predict([("file", f"{i}.png", good_png) for i in range(4)]).status == 200


def test_bodies_that_are_not_multipart(server):
    refused(server.request("POST", "/v1/predict", b"", {}), 415, "multipart/form-data")
    refused(server.request("POST", "/v1/predict", b'{"file": 1}', {"Content-Type": "application/json"}), 415)
    garbage = {"Content-Type": "multipart/form-data; boundary=xyz"}
    reply = server.request("POST", "/v1/predict", b"--nope\r\n\r\n", garbage)
    assert 400 <= reply.status < 500 and set(reply.json()) == {"error", "fix"}
    refused(server.request("POST", "/v1/predict", b"x", {"Content-Type": "multipart/form-data"}), 400)


def test_unknown_paths_methods_and_parameters(server, good_png):
    refused(server.request("GET", "/v2/predict"), 404)
    refused(server.request("GET", "/v1/predict"), 405)
    refused(server.request("DELETE", "/healthz"), 405)
    refused(server.predict([("file", "a.png", good_png)], "?top_k=0"), 422, "top_k")
    refused(server.predict([("file", "a.png", good_png)], "?top_k=ten"), 422, "top_k")
    refused(server.request("GET", "/static/missing.js"), 404)


def test_refusals_are_counted_and_nothing_was_a_500(server):
    metrics = server.metrics()
    assert metrics['fmnist_http_requests_total{route="/v1/predict",status="413"}'] >= 1
    assert not [name for name in metrics if 'status="5' in name]


def test_mangled_requests_are_never_a_500(server, good_png):
    """Truncated and corrupted copies of a valid request: answered 200 or 4xx, never 5xx."""
    body, content_type = multipart([("file", "a.png", good_png), ("file", "b.png", good_png)])
    rng = np.random.default_rng(0)
    statuses = set()
    for _ in range(40):
        mangled = bytearray(body)
        if rng.random() < 0.5:
            mangled = mangled[: int(rng.integers(0, len(mangled)))]
        for position in rng.integers(0, max(1, len(mangled)), size=int(rng.integers(1, 8))):
            if mangled:
                mangled[position] = int(rng.integers(0, 256))
        reply = server.request("POST", "/v1/predict", bytes(mangled), {"Content-Type": content_type})
        statuses.add(reply.status)
        assert reply.status == 200 or 400 <= reply.status < 500, (reply.status, reply.body)
        assert set(reply.json()) in ({"error", "fix"}, {"predictions", "model", "backend", "latency_ms"})
    assert any(400 <= status < 500 for status in statuses), statuses


def icns_holding(png_bytes: bytes) -> bytes:
    """An Apple icon file whose 512x512 entry ('ic09') is ``png_bytes``, whatever its size."""
    entry = b"ic09" + struct.pack(">I", 8 + len(png_bytes)) + png_bytes
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def test_formats_the_service_does_not_document_are_415(server):
    """Before: an ICNS holding a 100-megapixel PNG passed the header check (it says 512x512)
    and Pillow's DecompressionBombError came out as a 500."""
    bomb = icns_holding(png(Image.new("L", (10_000, 10_000))))
    refused(server.predict([("file", "icon.icns", bomb)]), 415, "not a supported image")
    for fmt in ("PPM", "TIFF", "TGA"):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 40), "white").save(buffer, fmt)
        refused(server.predict([("file", f"x.{fmt.lower()}", buffer.getvalue())]), 415, "not a supported image")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(buffer, "BMP")  # documented: served
    assert server.predict([("file", "x.bmp", buffer.getvalue())]).status == 200


def test_damaged_uploads_of_every_served_format_are_never_a_5xx(server):
    """Truncated and overwritten copies of a PNG, JPEG, WebP, GIF and BMP, posted: each
    answered 200 or 4xx with the error shape."""
    photo = Image.new("RGB", (60, 80), (230, 230, 230))
    photo.paste((20, 20, 20), (15, 15, 45, 65))
    rng = np.random.default_rng(1)
    statuses = {}
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
        buffer = io.BytesIO()
        (photo.convert("P") if fmt == "GIF" else photo).save(buffer, fmt)
        original = buffer.getvalue()
        for trial in range(24):
            data = bytearray(original[: int(rng.integers(1, len(original)))] if trial % 2 else original)
            for position in rng.integers(0, len(data), size=int(rng.integers(0, 6))):
                data[position] = int(rng.integers(0, 256))
            reply = server.predict([("file", f"x.{fmt.lower()}", bytes(data))])
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            assert reply.status == 200 or 400 <= reply.status < 500, (fmt, trial, reply.status, reply.body)
    assert any(400 <= status < 500 for status in statuses), statuses

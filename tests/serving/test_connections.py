"""Connection-level abuse over real sockets against a real `fmnist serve` process: idle and
slow clients, oversize heads, many idle sockets under a low file limit, oversized bodies
sent in one go, and requests beyond the concurrency limit."""

from __future__ import annotations

import http.client
import json
import resource
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from live_server import LiveServer, learnable_images, multipart, png

HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 2.0
OPTIONS = (
    "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--keep-alive-timeout", "1",
    "--max-header-kb", "8", "--max-upload-mb", "1", "--limit-concurrency", "2",
)  # fmt: skip


@pytest.fixture(scope="module")
def guarded(tiny_run, tmp_path_factory):
    live = LiveServer(tiny_run, *OPTIONS, log=tmp_path_factory.mktemp("guarded") / "server.log")
    yield live
    assert live.stop() == 0, live.log.read_text()
    assert "Traceback" not in live.log.read_text(), live.log.read_text()


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that was."""
    sock.settimeout(timeout)
    started, chunks = time.monotonic(), []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic() - started


def status_and_json(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_deadline(guarded):
    with connect(guarded) as sock:
        reply, waited = read_until_closed(sock, timeout=10)
    assert reply == b"" and waited < HEADER_TIMEOUT + 2, waited


def test_slowloris_head_is_cut_off_at_the_deadline(guarded):
    """A header byte every 0.2 s: before, the connection stayed open as long as bytes came."""
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started, reply = time.monotonic(), b""
        sock.settimeout(0.2)
        while time.monotonic() - started < HEADER_TIMEOUT + 4:
            try:
                sock.sendall(b"X")
                reply = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            break  # the server answered or closed
        waited = time.monotonic() - started
    assert waited < HEADER_TIMEOUT + 2, f"the trickling head was held for {waited:.1f} s"
    assert status_and_json(reply)[0] == 408, reply


def test_slow_body_is_cut_off_at_the_body_deadline(guarded, tiny_run):
    images, _ = learnable_images(tiny_run)
    body, content_type = multipart([("file", "a.png", png(images[0]))])
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    with connect(guarded) as sock:
        sock.sendall(head.encode() + body[:10])  # then nothing more
        reply, waited = read_until_closed(sock, timeout=BODY_TIMEOUT + 5)
    assert waited < BODY_TIMEOUT + 2, waited
    status, document = status_and_json(reply)
    assert status == 408 and "body" in document["error"], document


def test_oversize_head_is_431(guarded):
    big = "A" * (64 * 1024)
    with connect(guarded) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode())
        reply, _ = read_until_closed(sock, timeout=10)
    status, document = status_and_json(reply)
    assert status == 431 and "8,192 bytes" in document["error"], document
    assert guarded.request("GET", "/healthz").status == 200


def test_an_endless_header_line_is_cut_off_in_bounded_memory(guarded):
    """Before: one connection streaming one header value grew the server without limit."""
    rss_before = resident_kib(guarded.process.pid)
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"B" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 16 * 1024 * 1024, f"the server read {sent:,} bytes of one header"
    assert resident_kib(guarded.process.pid) - rss_before < 32 * 1024


def resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def test_a_body_over_the_limit_sent_in_one_go_gets_the_413_reply(guarded):
    """urllib sends the whole body without Expect: 100-continue; before, the server closed
    with the body unread and the client saw a connection reset instead of the 413."""
    body, content_type = multipart([("file", "big.png", b"\0" * (3 * 1024 * 1024))])
    request = urllib.request.Request(guarded.url + "/v1/predict", data=body, headers={"Content-Type": content_type})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert "1 MB" in json.loads(refused.value.read())["error"]


def test_requests_over_the_concurrency_limit_get_a_fast_503(guarded, tiny_run):
    """Two requests stuck in their bodies hold the limit of 2; a third is answered at once."""
    images, _ = learnable_images(tiny_run)
    body, content_type = multipart([("file", "a.png", png(images[0]))])
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    holders = [connect(guarded) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(head.encode() + body[:10])
        time.sleep(0.3)
        started = time.monotonic()
        reply = guarded.request("GET", "/healthz")
        assert reply.status == 503 and time.monotonic() - started < 1, reply
        assert reply.headers["retry-after"] == "1" and set(reply.json()) == {"error", "fix"}
        for sock in holders:  # the held requests still complete
            sock.sendall(body[10:])
            status, document = status_and_json(read_reply(sock))
            assert status == 200, document
    finally:
        for sock in holders:
            sock.close()
    assert guarded.request("GET", "/healthz").status == 200


def read_reply(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(data.split(b"\r\n\r\n", 1)[1]) < length:
        data += sock.recv(65536)
    return data


def test_many_idle_sockets_under_a_low_file_limit_do_not_lock_out_a_new_client(tiny_run, tmp_path):
    """With 256 file descriptors, 400 idle sockets: before, accept() failed and the service
    was unreachable until they went away; now the longest idle ones make room."""

    def low_file_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    live = LiveServer(tiny_run, log=tmp_path / "server.log", preexec_fn=low_file_limit)
    idle = []
    try:
        for _ in range(400):
            idle.append(connect(live))
        time.sleep(0.5)
        started = time.monotonic()
        reply = live.request("GET", "/healthz")
        assert reply.status == 200 and time.monotonic() - started < 5
        images, _ = learnable_images(tiny_run)
        assert live.predict([("file", "a.png", png(images[0]))]).status == 200
    finally:
        for sock in idle:
            sock.close()
        returncode = live.stop()
    assert returncode == 0, live.log.read_text()
    assert "Too many open files" not in live.log.read_text(), live.log.read_text()


def test_keep_alive_requests_still_work_under_the_deadlines(guarded):
    """Three requests on one connection, paused less than the keep-alive timeout apart."""
    connection = http.client.HTTPConnection(guarded.host, guarded.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("GET", "/healthz")
            assert connection.getresponse().read() == b'{"status":"ok"}'
            time.sleep(0.3)
    finally:
        connection.close()


def test_a_client_gone_mid_body_leaves_no_traceback(guarded, tiny_run):
    images, _ = learnable_images(tiny_run)
    body, content_type = multipart([("file", "a.png", png(images[0]))])
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    with connect(guarded) as sock:
        sock.sendall(head.encode() + body[:10])
        time.sleep(0.2)
    time.sleep(0.3)
    assert "Traceback" not in guarded.log.read_text()


def test_pipelined_requests_are_all_answered(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply, _ = read_until_closed(sock, timeout=10)
    assert reply.count(b"HTTP/1.1 200") == 3, reply


def gif_screen(width: int, height: int) -> bytes:
    """A 29-byte GIF: a width x height logical screen holding one 1x1 frame."""
    import struct

    return (
        b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
        + b",\x00\x00\x00\x00" + struct.pack("<HH", 1, 1) + b"\x00\x02\x02\x44\x01\x00;"
    )  # fmt: skip


def test_decoding_does_not_stall_other_clients(guarded):
    """Before: uploads under 256 kB were decoded on the event loop, and two tiny GIFs with
    4898x4898 screens (24 megapixels each) held every other client for seconds."""
    files = [("file", f"{index}.gif", gif_screen(4898, 4898)) for index in range(2)]
    done, latencies = threading.Event(), []

    def upload() -> None:
        try:
            for _ in range(3):
                assert guarded.predict(files).status == 200
        finally:
            done.set()

    uploader = threading.Thread(target=upload)
    uploader.start()
    while not done.is_set():
        started = time.monotonic()
        assert guarded.request("GET", "/healthz").status == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    uploader.join()
    assert max(latencies) < 0.75, latencies

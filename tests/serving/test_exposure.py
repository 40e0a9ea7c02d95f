"""Hardening for --host 0.0.0.0: Host allow-list, bearer token, CORS and security headers,
over real HTTP against a real server."""

from __future__ import annotations

import pytest
from live_server import LiveServer, learnable_images, png

TOKEN = "s3cret-token"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def exposed(tiny_run, tmp_path_factory):
    live = LiveServer(
        tiny_run,
        "--allowed-host", "127.0.0.1", "--allowed-host", "*.example.test", "--cors-origin", ORIGIN,
        log=tmp_path_factory.mktemp("exposed") / "server.log",
        env={"FMNIST_TOKEN": TOKEN},
    )  # fmt: skip
    yield live
    assert live.stop() == 0, live.log.read_text()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_api_and_metrics_need_the_token(exposed, tiny_run):
    images, _ = learnable_images(tiny_run)
    for path in ("/v1/model", "/metrics"):
        reply = exposed.request("GET", path)
        assert reply.status == 401 and set(reply.json()) == {"error", "fix"}, reply
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert exposed.request("GET", path, headers={"Authorization": "Bearer wrong"}).status == 401
        assert exposed.request("GET", path, headers=AUTH).status == 200
    body_reply = exposed.predict([("file", "a.png", png(images[0]))])
    assert body_reply.status == 401
    # The page, its files and the health checks stay open (a load balancer has no token).
    for path in ("/", "/static/app.js", "/healthz", "/readyz"):
        assert exposed.request("GET", path).status == 200, path


def test_hosts_outside_the_allow_list_are_refused(exposed):
    """A page on evil.test that rebinds its name to this server's address sends Host: evil.test."""
    reply = exposed.request("GET", "/healthz", headers={"Host": "evil.test"})
    assert reply.status == 400 and "evil.test" in reply.json()["error"]
    assert exposed.request("GET", "/healthz", headers={"Host": "api.example.test:8000"}).status == 200
    assert exposed.request("GET", "/healthz", headers={"Host": "example.test.evil"}).status == 400


def test_cors_allows_only_the_configured_origin(exposed):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    reply = exposed.request("OPTIONS", "/v1/predict", headers=preflight)
    assert reply.status == 200 and reply.headers["access-control-allow-origin"] == ORIGIN
    other = exposed.request("GET", "/v1/model", headers={"Origin": "https://other.example", **AUTH})
    assert "access-control-allow-origin" not in other.headers
    allowed = exposed.request("GET", "/v1/model", headers={"Origin": ORIGIN, **AUTH})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN


def test_security_headers(exposed):
    page = exposed.request("GET", "/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    for path in ("/", "/healthz"):
        headers = exposed.request("GET", path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"


def test_without_the_options_everything_is_open(server):
    """The default (loopback) server asks for no token and serves any Host."""
    assert server.request("GET", "/v1/model", headers={"Host": "anything.test"}).status == 200


def _raw(live, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as bytes (http.client will not send two Host headers): (status, body)."""
    import socket

    with socket.create_connection((live.host, live.port), timeout=30) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_two_host_headers_or_a_bad_port_are_refused(exposed):
    # RFC 9112 3.2: a proxy in front may read the other Host header than this check did.
    for first, second in ((b"127.0.0.1", b"evil.test"), (b"evil.test", b"127.0.0.1")):
        request = b"GET /healthz HTTP/1.1\r\nHost: " + first + b"\r\nHost: " + second + b"\r\nConnection: close\r\n\r\n"
        status, body = _raw(exposed, request)
        assert status == 400 and b"more than one Host" in body, body
    assert exposed.request("GET", "/healthz", headers={"Host": "api.example.test:evil"}).status == 400
    assert exposed.request("GET", "/healthz", headers={"Host": "api.example.test:8000"}).status == 200


def test_the_bearer_scheme_is_case_insensitive_the_token_is_not(exposed):
    assert exposed.request("GET", "/v1/model", headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    assert exposed.request("GET", "/v1/model", headers={"Authorization": f"BEARER  {TOKEN}"}).status == 200
    assert exposed.request("GET", "/v1/model", headers={"Authorization": f"Bearer {TOKEN.upper()}"}).status == 401
    assert exposed.request("GET", "/v1/model", headers={"Authorization": f"Basic {TOKEN}"}).status == 401
    assert exposed.request("GET", "/v1/model", headers={"Authorization": TOKEN}).status == 401


def test_a_refused_preflight_has_the_json_shape(exposed):
    for origin in ("https://other.example", "null"):
        reply = exposed.request(
            "OPTIONS", "/v1/predict", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert reply.status == 400 and reply.headers["content-type"] == "application/json", reply
        document = reply.json()
        assert set(document) == {"error", "fix"} and "origin" in document["error"], document


def test_head_answers_every_get_route_without_a_body(exposed):
    for path, headers in (("/healthz", {}), ("/readyz", {}), ("/", {}), ("/v1/model", AUTH), ("/static/app.js", {})):
        get, head = exposed.request("GET", path, headers=headers), exposed.request("HEAD", path, headers=headers)
        assert head.status == get.status == 200, (path, head.status)
        assert head.body == b"" and head.headers["content-type"] == get.headers["content-type"], path
    assert exposed.request("HEAD", "/v1/model").status == 401  # the token is still asked for


def test_an_absolute_url_is_judged_by_its_own_host(exposed):
    # RFC 9112 3.2.2: the target's authority replaces Host; a proxy in front reads it so.
    evil = b"GET http://evil.test/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    status, body = _raw(exposed, evil)
    assert status == 400 and b"evil.test" in body, body
    good = b"GET http://api.example.test:8000/healthz HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
    assert _raw(exposed, good)[0] == 200

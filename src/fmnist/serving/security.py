"""Hardening for a service reachable beyond the loopback (``--host 0.0.0.0``): a Host
allow-list (DNS rebinding), an optional bearer token for the API, and security headers.

Pure ASGI middlewares: they answer before anything reads the request body, and their
refusals have the service's JSON shape {"error", "fix"}.
"""

from __future__ import annotations

import hmac
import json

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The web page uses only its own files: no inline script or style, images are its own
# data: URLs (the 28x28 preview). /docs (Swagger UI from a CDN) gets no CSP.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
PROTECTED_PREFIXES = ("/v1/", "/metrics")  # what the token guards; the page and /healthz stay open


async def _refuse(send: Send, status: int, error: str, fix: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error, "fix": fix}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def host_matches(host: str, pattern: str) -> bool:
    """``host`` (no port) against ``example.com``, ``*.example.com`` or ``*``."""
    pattern = pattern.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _host_of(header: str) -> str | None:
    """The host of a Host header (``name``, ``name:port``, ``[v6]:port``); None when the
    port is not a number or the brackets do not close."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        end = header.find("]")
        host, rest = (header[: end + 1], header[end + 1 :]) if end > 0 else (None, "")
    elif header.count(":") == 1:
        host, rest = header.split(":")[0], ":" + header.split(":")[1]
    else:
        host, rest = header, ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return host


class HostAllowList:
    """Refuse (400) requests whose Host header is not one of ``allowed``: a page on another
    site that rebinds its DNS name to this server's address then cannot reach it."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"host"]
            if len(hosts) > 1:  # RFC 9112 3.2: a proxy may read the other one
                await _refuse(send, 400, "the request has more than one Host header", "send exactly one Host header")
                return
            header = hosts[0] if hosts else ""
            host = _host_of(header)
            if host is None or not any(host_matches(host, pattern) for pattern in self.allowed):
                await _refuse(
                    send, 400, f"host {header!r} is not served here", "use one of the server's names (--allowed-host)"
                )
                return
        await self.app(scope, receive, send)


class BearerToken:
    """Require ``Authorization: Bearer TOKEN`` on the API and metrics (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES) and scope["method"] != "OPTIONS":
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            scheme, _, credentials = given.strip().partition(b" ")
            # The scheme is case-insensitive (RFC 9110 11.1); the token is compared in constant time.
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.expected)):
                await _refuse(
                    send,
                    401,
                    "missing or wrong bearer token" if given else "this server needs a bearer token",
                    "send Authorization: Bearer TOKEN (the page: open /#token=TOKEN)",
                    [(b"www-authenticate", b'Bearer realm="fmnist"')],
                )
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """nosniff, no framing and no referrer on every reply; a Content-Security-Policy on the page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = SECURITY_HEADERS + ([(b"content-security-policy", PAGE_POLICY.encode())] if page else [])
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class HeadAsGet:
    """Answer HEAD on every GET route (uptime probes, ``curl -I``): the GET's status and
    headers, no body. FastAPI routes declared with ``@app.get`` answer only GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of the body is dropped; the last message ends the reply
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORSMiddleware whose refused preflights have the service's JSON shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        refused = bytes(response.body).decode("utf-8", "replace").replace("Disallowed CORS ", "")
        return JSONResponse(
            {
                "error": f"cross-origin request refused: its {refused} is not allowed here",
                "fix": "call from an origin the server allows (--cors-origin), with GET or POST",
            },
            status_code=400,
            headers=headers,
        )

"""Hardening for a service reachable beyond the loopback (``--host 0.0.0.0``): a Host
allow-list (DNS rebinding), an optional bearer token for the API, and security headers.

Pure ASGI middlewares: they answer before anything reads the request body, and their
refusals have the service's JSON shape {"error", "fix"}.
"""

from __future__ import annotations

import hmac
import json

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


def _host_of(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostAllowList:
    """Refuse (400) requests whose Host header is not one of ``allowed``: a page on another
    site that rebinds its DNS name to this server's address then cannot reach it."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")
            host = _host_of(header)
            if not any(host_matches(host, pattern) for pattern in self.allowed):
                await _refuse(
                    send, 400, f"host {header!r} is not served here", "use one of the server's names (--allowed-host)"
                )
                return
        await self.app(scope, receive, send)


class BearerToken:
    """Require ``Authorization: Bearer TOKEN`` on the API and metrics (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, b"Bearer " + token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES) and scope["method"] != "OPTIONS":
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
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

"""Connection-level limits of the HTTP service, below the ASGI app: uvicorn's httptools
protocol with deadlines and caps that uvicorn itself does not have.

uvicorn bounds only the idle time between keep-alive requests. Without more, a connection
that never sends a byte, a request head sent one byte at a time (slowloris), a body that
trickles in, or an endless header line is held forever, and each holds a file descriptor:
with ``ulimit -n 1024``, 1,100 idle sockets made the service unreachable. Here:

- the head of a request must arrive within ``header_timeout`` of the connection opening or
  of the previous reply (408, or a silent close when nothing was sent at all);
- a head over ``max_header_bytes`` is refused with 431 (counted on the raw bytes while the
  head is incomplete, so one endless header line cannot grow memory either);
- the body must arrive within ``body_timeout`` of its head (408);
- at most ``max_connections`` connections are open: a new one closes the connection that
  has been idle (or stuck in its head) longest, or is refused with 503 when all are busy;
- at most ``max_in_flight`` requests are processed at once: more get a fast 503;
- a reply sent before the request body was read (a 413, say) is followed by a lingering
  close: the rest of the body is read and dropped (at most ``linger_bytes``, for at most
  ``linger_timeout``) so that a client still sending it can read the reply instead of a
  connection reset.

Every refusal is the service's JSON shape {"error", "fix"} with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass
from functools import cache
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

PROTOCOL = "fmnist.serving.connections:GuardedHttpToolsProtocol"  # uvicorn's http= option; a string pickles
FD_RESERVE = 64  # descriptors kept for everything but client sockets: model, logs, spooled uploads, metrics
HEAD_LINGER_BYTES = 256 * 1024  # dropped after refusing a head: enough for a client to finish a big one
log = logging.getLogger("fmnist.serving")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds for a request head, from connect or the previous reply
    body_timeout: float = 60.0  # seconds for a body after its head (10 MB in 60 s: 1.4 Mbit/s)
    keep_alive_timeout: float = 5.0  # seconds an idle keep-alive connection is kept (uvicorn's own)
    max_header_bytes: int = 32 * 1024  # request line and headers together
    max_connections: int = 1000  # open client connections per process (also capped by the fd limit)
    max_in_flight: int = 128  # requests processed at once per process
    linger_bytes: int = 64 * 1024 * 1024  # most bytes of an unread body dropped before closing
    linger_timeout: float = 5.0  # seconds a lingering close waits for the client's last bytes


@cache
def usable_connections(wanted: int) -> int:
    """``wanted``, lowered to what the process's open-file limit leaves for client sockets.
    The soft limit is raised to the hard one first, as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config with the ConnectionLimits the protocol reads (it pickles, so the
    worker processes of --workers get them too)."""

    def __init__(self, *args: Any, connection_limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        connection_limits = connection_limits or ConnectionLimits()
        kwargs.setdefault("timeout_keep_alive", connection_limits.keep_alive_timeout)
        super().__init__(*args, http=PROTOCOL, **kwargs)
        self.connection_limits = connection_limits


def json_reply(status: int, error: str, fix: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A whole HTTP/1.1 reply that closes the connection, in the service's error shape."""
    body = json.dumps({"error": error, "fix": fix}).encode()
    lines = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        *(name + b": " + value + b"\r\n" for name, value in headers),
        b"\r\n",
        body,
    ]
    return b"".join(lines)


async def _busy(scope: dict, receive: Any, send: Any) -> None:
    """The reply to a request over ``max_in_flight``: an ASGI app, so uvicorn's cycle sends it."""
    body = json.dumps({"error": "the server is busy (too many requests in flight)", "fix": "retry in a moment"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": [*headers, (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: ``close()`` lingers while the current
    request's body is still arriving; everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport, self._protocol = transport, protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        if self._protocol.body_pending and not self._transport.is_closing():
            self._protocol.linger()
        else:
            self._transport.close()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and caps of ConnectionLimits."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ConnectionLimits = getattr(config, "connection_limits", None) or ConnectionLimits()
        self.limit_concurrency = None  # replaced by max_in_flight (uvicorn's also counts idle connections)
        self.raw_transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.in_head = False  # a request head has begun and is not complete
        self.head_bytes = 0  # raw bytes of the incomplete head
        self.head_size = 0  # request line and headers as parsed
        self.body_pending = False  # the current request's body has not fully arrived
        self.lingering = False
        self.handing_over = False  # in on_response_complete, which may start a pipelined request
        self.linger_left = 0  # bytes still dropped while lingering, then the close
        self.last_activity = 0.0  # loop time the connection last began waiting for a client

    # Connections
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self.last_activity = self.loop.time()
        self._arm(self.limits.header_timeout, self._head_timed_out)
        # Lingering ones count (they hold a descriptor) and are the first to go.
        open_connections = [
            connection for connection in self.connections if not getattr(connection, "raw_transport", connection.transport).is_closing()
        ]
        if len(open_connections) > usable_connections(self.limits.max_connections):
            self._make_room(open_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """No request of this connection is being processed: it waits for the client."""
        return not self.pipeline and (self.cycle is None or self.cycle.response_complete)

    def _make_room(self, open_connections: list) -> None:
        waiting = [
            connection
            for connection in open_connections
            if connection is not self and isinstance(connection, GuardedHttpToolsProtocol) and connection.idle()
        ]
        if waiting:
            oldest = min(waiting, key=lambda connection: (not connection.lingering, connection.last_activity))
            oldest.raw_transport.close()  # type: ignore[union-attr]
            return
        log.warning("refused a connection: %d connections are busy", len(open_connections) - 1)
        self._refuse(503, "the server is busy (too many connections)", "retry in a moment", linger=False)

    # Deadlines
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _head_timed_out(self) -> None:
        self.deadline = None
        if self.in_head:
            seconds = self.limits.header_timeout
            self._refuse(408, f"the request head did not arrive within {seconds:g} s", "send the whole request at once")
        elif self.idle():
            self.raw_transport.close()  # type: ignore[union-attr]  # nothing sent: nothing to answer

    def _body_timed_out(self) -> None:
        self.deadline = None
        cycle = self.cycle
        if cycle is None or not self.body_pending or cycle.response_started:
            return
        # The app sees a disconnect and stops reading; the client gets the reason.
        cycle.disconnected = True
        cycle.message_event.set()
        seconds = self.limits.body_timeout
        self._refuse(408, f"the request body did not arrive within {seconds:g} s", "send the body faster or smaller", linger=False)

    def _refuse(self, status: int, error: str, fix: str, *, linger: bool = True) -> None:
        transport = self.raw_transport
        if transport is None or transport.is_closing() or self.lingering:
            return
        headers = ((b"retry-after", b"1"),) if status == 503 else ()
        transport.write(json_reply(status, error, fix, headers=headers))
        self.in_head = False
        if linger:
            self.body_pending = True  # whatever the client still sends is dropped, bounded
            self.linger(HEAD_LINGER_BYTES)
        else:
            transport.close()

    def linger(self, most_bytes: int | None = None) -> None:
        """Half-close: the reply and a FIN go out; what the client still sends is read and
        dropped until it closes, ``most_bytes`` (``linger_bytes``) or ``linger_timeout``,
        then the close."""
        transport = self.raw_transport
        if transport is None or self.lingering:
            return
        self.lingering = True
        self.linger_left = self.limits.linger_bytes if most_bytes is None else most_bytes
        self.last_activity = self.loop.time()
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self._arm(self.limits.linger_timeout, transport.close)

    # Data
    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.linger_left -= len(data)
            if self.linger_left < 0:
                self.raw_transport.close()  # type: ignore[union-attr]
            return
        super().data_received(data)
        if self.in_head and not self.lingering:
            # Still in the head after this chunk: all of it was head. (A head that completes
            # within a chunk is measured exactly in on_headers_complete.)
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._refuse_large_head()

    def eof_received(self) -> bool | None:
        if self.lingering:
            self.raw_transport.close()  # type: ignore[union-attr]  # the client is done: close now
        return None

    def _refuse_large_head(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(431, f"the request head is over the limit of {limit:,} bytes", "send fewer or shorter headers (cookies?)")

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, 0
        self.head_size = 0
        if self.deadline is None:  # a pipelined request: its head gets its own deadline
            self._arm(self.limits.header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_size += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_size > self.limits.max_header_bytes:
            self._refuse_large_head()
            return
        self.body_pending = True
        self._arm(self.limits.body_timeout, self._body_timed_out)
        self._host_from_absolute_url()
        super().on_headers_complete()

    def _host_from_absolute_url(self) -> None:
        """``GET http://evil.test/v1/model`` (absolute form): RFC 9112 3.2.2 says the
        target's authority replaces the Host header, as a proxy in front would read it;
        uvicorn keeps only the path, so the Host allow-list must see that authority."""
        if not self.url[:8].lower().startswith((b"http://", b"https://")):
            return
        import httptools

        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return  # uvicorn answers it with its own 400
        authority = (parsed.host or b"") + (b":%d" % parsed.port if parsed.port else b"")
        # In place: the request scope holds this very list.
        self.headers[:] = [(name, value) for name, value in self.headers if name != b"host"] + [(b"host", authority)]

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and not self.lingering:  # lingering: the rest of a refused request
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.lingering:
            return
        self.body_pending = False
        self._disarm()
        if self.cycle is not None:
            super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # An unparsable request: the service's JSON shape rather than uvicorn's plain text.
        self._refuse(400, "invalid HTTP request", "send a valid HTTP/1.1 request", linger=False)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        in_flight = sum(not task.done() for task in self.tasks)
        if self.handing_over:  # a pipelined request takes over from this connection's finished one
            in_flight -= 1
        if in_flight >= self.limits.max_in_flight:
            app = _busy
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        if self.body_pending and not self.lingering and not self.pipeline and self.cycle.response_complete:
            # Replied before the body was read (a refusal): do not read on through it.
            self.transport.close()
        self.handing_over = True
        try:
            super().on_response_complete()
        finally:
            self.handing_over = False
        if not self.lingering and not self.transport.is_closing() and not self.pipeline and not self.in_head:
            self.last_activity = self.loop.time()
            self._arm(self.limits.header_timeout, self._head_timed_out)

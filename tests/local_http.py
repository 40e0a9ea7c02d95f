"""A real HTTP server on 127.0.0.1 in a background thread, for the download tests."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up mid-response is what several tests do on purpose (a
    download refused for its size, a connection dropped by the server's own handler):
    no traceback on the test output for it; any other handler error is still printed."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve with ``handler`` until the block ends; yields the server's base URL."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

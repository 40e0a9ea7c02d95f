"""Photo decoding for the HTTP service: off the event loop, a bounded number at a time.

Every request's images are checked and decoded in one of ``slots`` threads, never on the
event loop (a 35-byte GIF with a large logical screen took 1.5 s to decode, and stalled
every other client while it did). The pool has exactly ``slots`` threads, so at most that
many images are in memory at full size at once (one 24-megapixel PNG is ~100 MB while it
is decoded and reduced); a request that finds every slot busy waits at most ``wait_s``
seconds, then gets a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fmnist.serving.uploads import RequestRefused

T = TypeVar("T")


class DecodePool:
    def __init__(self, slots: int, *, wait_s: float) -> None:
        if slots < 1 or wait_s < 0:
            raise ValueError(f"need slots >= 1 and wait_s >= 0, got {slots}, {wait_s}")
        self.slots, self.wait_s = slots, wait_s
        self._executor = ThreadPoolExecutor(slots, thread_name_prefix="fmnist-decode")
        self._free: asyncio.Semaphore | None = None  # made on the serving loop, in start()

    def start(self) -> None:
        self._free = asyncio.Semaphore(self.slots)

    def stop(self) -> None:
        self._executor.shutdown(wait=True)

    async def run(
        self, function: Callable[..., T], *args: object, abandoned: Callable[[], Awaitable[bool]] | None = None
    ) -> T:
        """``function(*args)`` in a decoding thread, once a slot is free (503 after ``wait_s``).

        ``abandoned`` (e.g. ``request.is_disconnected``) is asked once the slot is taken: a
        client that hung up while it waited costs no decoding (a decode once started runs
        to its end, in C)."""
        if self._free is None:
            raise RuntimeError("DecodePool.start() was not called")
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait_s)
        except TimeoutError:
            raise RequestRefused(
                503,
                f"the server is busy: all {self.slots} image decoding slots stayed taken for {self.wait_s:g} s",
                "retry in a moment",
                headers={"Retry-After": "1"},
            ) from None
        try:
            if abandoned is not None and await abandoned():
                raise RequestRefused(400, "the client disconnected before its images were decoded", "keep the connection open")
            # The pool's own threads are the cap: a request cancelled meanwhile frees its
            # slot, but its decode still holds a thread until it ends.
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._free.release()

"""Micro-batching: concurrent requests share one forward pass.

Requests queue their images; one collector task waits for the first, then up to
``max_wait_ms`` for more (or until ``max_batch`` images are queued), and runs the model
on the concatenation in a single worker thread so the event loop keeps accepting and
parsing requests meanwhile. Requests that arrive during a forward pass form the next
batch, so under load batches grow without any extra waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class _Job:
    images: np.ndarray  # uint8 (n, 28, 28)
    future: asyncio.Future


class BatcherStopped(RuntimeError):
    """The service is shutting down; the request was not processed."""


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``predict`` maps uint8 images (N, 28, 28) to probabilities (N, C); a request with
        more than ``max_batch`` images forms a batch of its own."""
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # images waiting in _jobs
        self._arrived = asyncio.Event()  # _jobs is not empty
        self._full = asyncio.Event()  # _jobs holds at least max_batch images
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        # One thread: forward passes run one after another, each using the backend's own threads.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fmnist-forward")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="fmnist-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(BatcherStopped("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, C) for uint8 images (n, 28, 28), computed in a shared batch."""
        if self._task is None:
            raise BatcherStopped("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(images, future))
        self._queued += len(images)
        self._arrived.set()
        if self._queued >= self.max_batch:
            self._full.set()
        return await future

    def _take_batch(self) -> list[_Job]:
        jobs = [self._jobs.popleft()]  # always at least one, however large
        count = len(jobs[0].images)
        while self._jobs and count + len(self._jobs[0].images) <= self.max_batch:
            job = self._jobs.popleft()
            jobs.append(job)
            count += len(job.images)
        self._queued -= count
        if not self._jobs:
            self._arrived.clear()
        if self._queued < self.max_batch:
            self._full.clear()
        return jobs

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if self.max_wait > 0 and self._queued < self.max_batch:
                try:
                    await asyncio.wait_for(self._full.wait(), self.max_wait)
                except TimeoutError:
                    pass
            jobs = [job for job in self._take_batch() if not job.future.done()]  # done: client gone
            if not jobs:
                continue
            images = jobs[0].images if len(jobs) == 1 else np.concatenate([job.images for job in jobs])
            if self._on_batch is not None:
                self._on_batch(len(images))
            try:
                probabilities = await loop.run_in_executor(self._executor, self._predict, images)
            except Exception as error:  # noqa: BLE001 - fail this batch's requests, keep serving the next
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in jobs:
                end = start + len(job.images)
                if not job.future.done():
                    job.future.set_result(probabilities[start:end])
                start = end

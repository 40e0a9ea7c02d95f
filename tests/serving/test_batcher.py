"""The micro-batcher on its own: batch bounds, order, failures and shutdown."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from fmnist.serving.batcher import BatcherStopped, MicroBatcher


def images_of(values: list[int]) -> np.ndarray:
    """uint8 (n, 28, 28) images whose pixels all equal the given values, to trace them."""
    return np.stack([np.full((28, 28), value, np.uint8) for value in values])


def echo(images: np.ndarray) -> np.ndarray:
    """'Probabilities' (n, 2) that carry each image's pixel value and the batch size."""
    return np.stack([images[:, 0, 0].astype(np.float32), np.full(len(images), len(images), np.float32)], axis=1)


def run_concurrently(batcher: MicroBatcher, requests: list[list[int]]) -> list[np.ndarray]:
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(images_of(values)) for values in requests))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_bounded_batches_and_get_their_own_rows():
    sizes = []
    batcher = MicroBatcher(echo, max_batch=8, max_wait_ms=50, on_batch=sizes.append)
    requests = [[index, index + 100] for index in range(10)]  # 20 images, 2 per request
    replies = run_concurrently(batcher, requests)
    for values, reply in zip(requests, replies):
        assert reply[:, 0].tolist() == values  # each request gets its own rows, in order
    assert sum(sizes) == 20 and max(sizes) <= 8 and sizes[0] == 8, sizes  # full batches, never over the bound


def test_a_request_larger_than_the_batch_bound_is_a_batch_of_its_own():
    sizes = []
    replies = run_concurrently(MicroBatcher(echo, max_batch=4, max_wait_ms=0, on_batch=sizes.append), [list(range(10))])
    assert replies[0][:, 0].tolist() == list(range(10))
    assert sizes == [10]


def test_the_forward_pass_runs_off_the_event_loop():
    threads = set()

    def record(images):
        threads.add(threading.current_thread().name)
        return echo(images)

    run_concurrently(MicroBatcher(record, max_batch=4, max_wait_ms=1), [[1], [2]])
    assert threads and all(name.startswith("fmnist-forward") for name in threads)


def test_a_failing_batch_fails_its_requests_and_the_next_batch_still_works():
    calls = []

    def flaky(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("model failure")
        return echo(images)

    async def main():
        batcher = MicroBatcher(flaky, max_batch=4, max_wait_ms=0)
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model failure"):
                await batcher.predict(images_of([1]))
            return await batcher.predict(images_of([2]))
        finally:
            await batcher.stop()

    assert asyncio.run(main())[:, 0].tolist() == [2]


def test_requests_after_stop_are_refused():
    async def main():
        batcher = MicroBatcher(echo)
        batcher.start()
        await batcher.stop()
        with pytest.raises(BatcherStopped):
            await batcher.predict(images_of([1]))

    asyncio.run(main())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(echo, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(echo, max_wait_ms=-1)

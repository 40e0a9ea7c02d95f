"""Concurrent requests are micro-batched into shared forward passes."""

from __future__ import annotations

import threading

from live_server import learnable_images, png


def test_concurrent_requests_share_forward_passes(server, tiny_run):
    images, _ = learnable_images(tiny_run)
    bodies = [png(images[index]) for index in range(32)]
    before = server.metrics()
    start = threading.Barrier(len(bodies))
    replies = [None] * len(bodies)

    def send(index: int) -> None:
        start.wait()
        replies[index] = server.predict([("file", f"{index}.png", bodies[index])])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(reply is not None and reply.status == 200 for reply in replies), replies
    # Each reply belongs to its own request, even when batched with others.
    assert [reply.json()["predictions"][0]["filename"] for reply in replies] == [f"{i}.png" for i in range(32)]
    after = server.metrics()

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert delta("fmnist_batch_size_sum") == 32  # every image went through exactly one forward pass
    batches, single_image_batches = delta("fmnist_batch_size_count"), delta('fmnist_batch_size_bucket{le="1.0"}')
    assert batches < 32 and single_image_batches < batches, (batches, single_image_batches)  # some batch held > 1

"""The dynamic batcher: merges waiting requests, returns each its own rows, survives errors."""

import asyncio
import threading

import numpy as np
import pytest

from cifar_pipeline.serving.batching import DynamicBatcher


class GatedModel:
    """Doubles its input; the first call blocks until released, so requests pile up behind it."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        self.started.set()
        self.release.wait(5)
        return images * 2


async def submit_behind_first(batcher: DynamicBatcher, model: GatedModel, requests: list[np.ndarray]) -> list:
    first = asyncio.ensure_future(batcher.submit(requests[0]))
    await asyncio.to_thread(model.started.wait, 5)  # the first call runs and blocks
    rest = [asyncio.ensure_future(batcher.submit(r)) for r in requests[1:]]
    await asyncio.sleep(0.05)  # let the rest reach the queue
    model.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_waiting_requests_share_one_call_and_get_their_own_rows() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch=16)
    requests = [np.full((n, 1), i) for i, n in enumerate([1, 2, 1, 3])]
    results = asyncio.run(submit_behind_first(batcher, model, requests))
    batcher.close()
    assert model.calls == [1, 6]  # the three that waited went in one call
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result, request * 2)


def test_a_batch_stops_at_max_batch_images() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch=4)
    requests = [np.zeros((2, 1)) for _ in range(4)]
    asyncio.run(submit_behind_first(batcher, model, requests))
    batcher.close()
    assert model.calls == [2, 4, 2]


def test_a_failing_call_fails_its_requests_and_the_next_ones_still_run() -> None:
    def flaky(images: np.ndarray) -> np.ndarray:
        if (images < 0).any():
            raise RuntimeError("bad batch")
        return images

    async def scenario(batcher: DynamicBatcher) -> np.ndarray:
        with pytest.raises(RuntimeError, match="bad batch"):
            await batcher.submit(np.array([[-1]]))
        return await batcher.submit(np.array([[5]]))

    batcher = DynamicBatcher(flaky, max_batch=8)
    assert asyncio.run(scenario(batcher)).tolist() == [[5]]
    batcher.close()


def test_requests_that_timed_out_are_not_run() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch=16)

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
        await asyncio.to_thread(model.started.wait, 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit(np.zeros((3, 1))), 0.05)
        model.release.set()
        await first

    asyncio.run(scenario())
    batcher.close()
    assert model.calls == [1]

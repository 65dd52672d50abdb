"""Dynamic batching: one model call for every request waiting at that moment.

A batch-1 call leaves most of a CPU's vector units idle, and several batch-1 calls in
parallel threads fight over the same cores and caches. One inference thread that takes
everything queued (up to a limit) and runs it as one batch on all the cores is both
faster for a lone request (it gets every core) and higher in throughput under load
(one bigger batch per call). No request waits on purpose: a batch is whatever piled up
while the previous one ran, so an idle server answers at batch-1 latency.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future[np.ndarray], result: np.ndarray | BaseException) -> None:
    if future.done():  # the request timed out or its client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class DynamicBatcher:
    """Feeds `run` (images -> per-image outputs) from one thread, merging queued requests."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int) -> None:
        self._run = run
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="inference", daemon=True)
        self._thread.start()

    async def submit(self, images: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.put(_Pending(images, future, loop))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take_batch(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """`first` plus whatever else is queued, up to max_batch images; and whether to stop."""
        batch, count = [first], len(first.images)
        while count < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            count += len(item.images)
        return batch, False

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._take_batch(first)
            # Requests that already timed out are not worth a model call.
            batch = [item for item in batch if not item.future.done()]
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            outputs = self._run(np.concatenate([item.images for item in batch]))
        except Exception as exc:  # every waiting request gets the error, the thread lives on
            log.exception("inference failed for a batch of %d requests", len(batch))
            for item in batch:
                item.loop.call_soon_threadsafe(_resolve, item.future, exc)
            return
        start = 0
        for item in batch:
            end = start + len(item.images)
            item.loop.call_soon_threadsafe(_resolve, item.future, outputs[start:end])
            start = end

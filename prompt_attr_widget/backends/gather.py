"""Requests that arrive together are answered together: one worker call for up to `limit`.

The local model decodes several greedy answers in one llama.cpp batch for less than
the cost of each alone (kv.AlignedKV.greedy), but the engine asks for answers one
coroutine at a time. Each request joins a queue and schedules a drain on the model's
worker thread; the first drain to run takes what is queued (up to `limit`), later ones
find less or nothing. Requests batch exactly when they would otherwise have waited
for the worker, and a lone request is not delayed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor


class Gather:
    def __init__(self, executor: Executor, limit: int, answer_many: Callable[[list], list]):
        """`answer_many(requests)` runs on the executor and returns a result or an exception per request."""
        self.executor, self.limit, self.answer_many = executor, limit, answer_many
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self.sizes: list[int] = []  # how many requests each drain answered (tests, benchmarks)

    async def submit(self, request):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._queue.append((request, future, loop))
        self.executor.submit(self._drain)
        return await future

    def _drain(self) -> None:
        with self._lock:
            taken = [self._queue.popleft() for _ in range(min(self.limit, len(self._queue)))]
        taken = [t for t in taken if not t[1].cancelled()]  # a halted run's requests are dropped
        if not taken:
            return
        self.sizes.append(len(taken))
        try:
            results = self.answer_many([request for request, _, _ in taken])
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
            results = [exc] * len(taken)
        for (_, future, loop), result in zip(taken, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future, result) -> None:
    if future.done():  # cancelled while it was computed
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

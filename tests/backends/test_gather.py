"""Requests that arrive together are answered together, each waiter gets its own result."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from prompt_attr_widget.backends.gather import Gather


async def _queued(answer_many, limit: int, requests: list, while_queued=None):
    """Submit `requests` while the worker is busy, so they queue up behind it; then let it go.
    (results or exceptions, the gather)."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        gather = Gather(executor, limit, answer_many)
        release = threading.Event()
        executor.submit(release.wait)
        tasks = [asyncio.ensure_future(gather.submit(r)) for r in requests]
        await asyncio.sleep(0.05)
        if while_queued:
            while_queued(tasks)
            await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True), gather


def test_requests_queued_together_are_answered_in_batches_of_at_most_the_limit():
    calls: list[list[int]] = []

    def answer_many(requests):
        calls.append(list(requests))
        return [r * 10 if r != 3 else ValueError("three") for r in requests]

    async def main():
        # request 1 is cancelled while queued, as a halted run's are: dropped, never computed
        results, gather = await _queued(answer_many, 2, list(range(5)), lambda tasks: tasks[1].cancel())
        with ThreadPoolExecutor(max_workers=1) as executor:
            gather.executor = executor
            lone = await gather.submit(7)  # nothing queued with it: answered alone, at once
        return results, lone, gather.sizes

    results, lone, sizes = asyncio.run(main())
    assert results[0] == 0 and isinstance(results[1], asyncio.CancelledError)
    assert results[2] == 20 and isinstance(results[3], ValueError) and results[4] == 40
    assert calls == [[0], [2, 3], [4], [7]] and sizes == [1, 2, 1, 1] and lone == 70
    assert all(len(c) <= 2 for c in calls)


def test_a_failing_batch_fails_each_of_its_requests_and_nothing_else():
    def answer_many(requests):
        if 1 in requests:
            raise RuntimeError("llama_decode returned -1")
        return list(requests)

    (first, second, third, fourth), _ = asyncio.run(_queued(answer_many, 2, list(range(4))))
    for failed in (first, second):
        assert isinstance(failed, RuntimeError) and "-1" in str(failed)
    assert (third, fourth) == (2, 3)


def test_an_answer_to_a_request_cancelled_mid_computation_is_dropped_quietly():
    started, release = threading.Event(), threading.Event()

    def answer_many(requests):
        started.set()
        release.wait()
        return list(requests)

    async def main():
        with ThreadPoolExecutor(max_workers=1) as executor:
            gather = Gather(executor, 4, answer_many)
            task = asyncio.ensure_future(gather.submit(1))
            await asyncio.to_thread(started.wait)
            task.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)  # the late result reaches a cancelled future: no InvalidStateError

    asyncio.run(main())

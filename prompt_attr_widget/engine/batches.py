"""Batches: a run's measurements, run concurrently and numbered in order of arrival."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ..core.events import Evaluated
from ..core.schema import Evaluation


class Batches:
    """The measurements of one batch in flight at a time, each numbered as its result arrives."""

    def __init__(self, concurrency: int):
        self.done = 0  # evaluations numbered so far (a resumed run's stored ones included)
        self.planned = 0
        self.unreported: list[Evaluated] = []  # answers that came back but were never streamed
        self.tasks: list[asyncio.Future] = []  # the measurements of the batch in flight
        # Evaluations, not just calls, are limited: an evaluation that has its answer
        # gets its embedding before further answers are bought, so results arrive
        # (and are saved) steadily instead of all at the end of a batch.
        self.slots = asyncio.Semaphore(concurrency)

    async def run(self, jobs: list) -> AsyncIterator[Evaluation]:
        """Run measurements concurrently, yielding their evaluations as they arrive."""
        self.planned = self.done + len(jobs)
        tasks = self.tasks = [asyncio.ensure_future(self._gated(job)) for job in jobs]
        try:
            for next_done in asyncio.as_completed(tasks):
                ev = await next_done
                ev.id = self.done  # numbered in order of arrival
                self.done += 1
                yield ev
        finally:
            self.halt()

    async def _gated(self, job):
        try:
            async with self.slots:
                return await job
        finally:
            job.close()  # cancelled before it started: no "never awaited" warning

    def halt(self) -> None:
        """Cancel the measurements in flight; answers already back are kept for the store.

        Called when a batch ends and when the whole stream is closed from
        outside (an interrupt in a sink): closing the outer generator does
        not close the nested ones at once, so the run itself must stop them.
        """
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is None and task.result().id == -1:
                task.result().id = self.done
                self.done += 1
                self.unreported.append(Evaluated(evaluation=task.result()))

    async def settle(self) -> None:
        """Halt, and wait until the cancelled measurements have stopped: a call cut off
        mid-flight books its worst case as spent only then (see Evaluator._paid)."""
        self.halt()
        with contextlib.suppress(BaseException):  # stopping already; a second interrupt changes nothing
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.halt()  # (nothing new is expected: every task still running was cancelled)

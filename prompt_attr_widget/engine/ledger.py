"""Ledger: what a run has spent and how long its stages took, over every session of it.

A resumed run continues a stored one: the dollars of its earlier sessions go
back into the budget (`restore`), so the budget holds the whole run's; its
counts and timings are added to this session's when they are reported.
"""

from __future__ import annotations

import time

from ..core.events import Progress
from ..core.schema import RunRecord, Spend
from .evaluate import Evaluator

_COUNTS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "embed_tokens")


class Ledger:
    def __init__(self, evaluator: Evaluator, stored: RunRecord | None = None):
        self.evaluator = evaluator
        self.stored = stored  # the run's earlier sessions, when it is resumed
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    def timed(self, stage: str, since: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + (time.perf_counter() - since) * 1000, 3)

    def restore(self) -> None:
        """Put the earlier sessions' dollars back into the budget.

        Calls an earlier session was killed during (reserved on disk, their
        outcome never written) may have been billed: they count as spent at
        their worst case from now on.
        """
        budget = self.evaluator.budget
        if self.stored.spend.usd is None:
            budget.unknown = True
        else:
            budget.spent = self.stored.spend.counted_usd

    def spend(self) -> Spend:
        """Spend so far, every session of the run included (the budget already holds earlier dollars)."""
        now = self.evaluator.spend_snapshot()
        if self.stored is None:
            return now
        before = self.stored.spend  # its dollars, reservations included, are in the budget already
        return now.model_copy(update={k: getattr(now, k) + getattr(before, k) for k in _COUNTS})

    def progress(self, done: int, planned: int) -> Progress:
        elapsed = time.perf_counter() - self.started
        remaining = planned - done
        eta = elapsed / done * remaining if done else None
        spend = self.spend()
        return Progress(
            done=done,
            planned=planned,
            calls=spend.calls,
            cache_hits=spend.cache_hits,
            spend_usd=spend.usd,
            elapsed_s=round(elapsed, 3),
            eta_s=None if eta is None else round(eta, 3),
        )

    def total_timings(self) -> dict[str, float]:
        """Milliseconds per stage, summed over every session of the run."""
        self.timings["total_ms"] = round((time.perf_counter() - self.started) * 1000, 3)
        before = self.stored.timings_ms if self.stored is not None else {}
        return {k: round(before.get(k, 0.0) + self.timings.get(k, 0.0), 3) for k in {*before, *self.timings}}

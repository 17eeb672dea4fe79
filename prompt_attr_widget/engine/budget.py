"""The cost guardrail: a projection that refuses before the first call, and a hard budget.

A call is only started when its worst case (see core/cost.py) still fits
the budget, so spend can never pass the budget, whatever the latency or
concurrency.
"""

from __future__ import annotations

import threading

from ..core.errors import BudgetRefused, UsageError
from ..core.text import usd


class Budget:
    """Reserve-then-settle accounting that keeps actual spend within the budget.

    Before a call, `reserve` books the call's worst case; the call is only
    made if spent + reserved stays within the limit. Afterwards `settle`
    swaps the reservation for the real cost. Thread-safe, because local
    backends settle from worker threads.
    """

    def __init__(self, limit_usd: float | None):
        self.limit = limit_usd
        self.spent = 0.0
        self.unknown = False
        self._reserved = 0.0
        self._lock = threading.Lock()

    def reserve(self, worst_case_usd: float | None) -> bool:
        with self._lock:
            if worst_case_usd is None:
                self.unknown = True
                return self.limit is None
            if self.limit is not None and self.spent + self._reserved + worst_case_usd > self.limit + 1e-12:
                return False
            self._reserved += worst_case_usd
            return True

    def settle(self, reserved_usd: float | None, actual_usd: float | None) -> None:
        with self._lock:
            if reserved_usd is not None:
                self._reserved = max(0.0, self._reserved - reserved_usd)
            if actual_usd is None:
                self.unknown = True
            else:
                self.spent += actual_usd

    @property
    def spent_usd(self) -> float | None:
        """Spend so far, or None when some of it had no known price."""
        return None if self.unknown else self.spent


def check_projection(projected_usd: float | None, budget_usd: float | None, model: str) -> None:
    """Refuse before the first call when the projected spend exceeds the budget."""
    if budget_usd is None:
        return
    if projected_usd is None:
        raise UsageError(
            f"model {model!r} has no known price, so a budget cannot be enforced: "
            "give its price (price=Price(input=..., output=...) or --price-in/--price-out, "
            "USD per million tokens), or drop the budget"
        )
    if projected_usd > budget_usd:
        raise BudgetRefused(
            f"refused: this run could cost up to {usd(projected_usd)}, over the budget of "
            f"{usd(budget_usd)}; raise --budget, use --method hierarchical, a coarser --segment, "
            "a smaller --max-tokens, or --model local (free)",
            projected_usd,
            budget_usd,
        )

"""The cost guardrail: a projection that refuses before the first call, and a hard budget.

A call is only started when its worst case still fits the budget, so spend
never passes the budget, whatever the latency or concurrency. The worst case
is the byte bound of what is sent plus what the server's template adds
(core/cost.py): conservative until the server has answered a request of
that kind, then calibrated from the usage it reports (`Calibration`).

The projection is an estimate of the run's typical spend (core/cost.py),
not a limit: a run it lets start may still be stopped by the budget, with
everything paid for saved.
"""

from __future__ import annotations

import math
import threading

from ..core.cost import (
    BOUND_CALL_TOKENS,
    BOUND_MESSAGE_TOKENS,
    CALIBRATION_FACTOR,
    CALIBRATION_MARGIN_TOKENS,
    Request,
)
from ..core.errors import BudgetRefused, UsageError
from ..core.text import usd


class Calibration:
    """The most a request may be billed, learnt from the `usage` every response reports.

    Before a server has answered a request of a kind (chat, logprob, embed)
    the bound is conservative (`Request.conservative_tokens`). Each response
    then shows an overhead: the prompt tokens billed beyond the byte bound
    of the text sent, the template's tokens less the bytes the tokenizer
    merged. The bound of a later request adds, per part (message, input),
    the largest overhead seen, times CALIBRATION_FACTOR plus
    CALIBRATION_MARGIN_TOKENS, and never less than the conservative
    overhead: a long request merges many bytes and so hides a template a
    short one would pay for in full. It goes below the conservative overhead
    only to what a response proves: the fewest prompt tokens billed for a
    request of the same kind and form bound its template's tokens (its text
    was at least zero tokens). And it is never below what was billed for a
    comparable request (the same kind and form, no fewer bytes). Completions
    likewise: max_tokens, plus the most tokens a server was seen to bill
    beyond it.

    Thread-safe: the local backend's calls finish on worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_part: dict[str, float] = {}  # kind -> largest (billed - bytes) / parts seen
        self._fewest: dict[tuple[str, tuple[str, ...]], int] = {}  # (kind, form) -> fewest prompt tokens billed
        self._output_over: dict[str, int] = {}  # kind -> most output tokens billed beyond the cap

    def answered(self, kind: str) -> bool:
        """Whether a response with usage to a request of this kind has been seen."""
        with self._lock:
            return kind in self._per_part

    def tokens(self, request: Request) -> tuple[int, int]:
        """(prompt, output) tokens this request may be billed at most."""
        prompt, output = request.conservative_tokens()
        with self._lock:
            if request.kind not in self._per_part:
                return prompt, output
            conservative = BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS * request.parts
            seen = math.ceil(max(0.0, self._per_part[request.kind]) * request.parts)
            raised = max(conservative, math.ceil(seen * CALIBRATION_FACTOR) + CALIBRATION_MARGIN_TOKENS)
            fewest = self._fewest.get((request.kind, request.form))
            allowance = max(seen, raised if fewest is None else min(raised, fewest))
            over = self._output_over.get(request.kind, 0)
            if over > 0:
                output += math.ceil(over * CALIBRATION_FACTOR) + CALIBRATION_MARGIN_TOKENS
            return request.content_bytes + allowance, output

    def observe(self, request: Request, prompt_tokens: int, output_tokens: int) -> None:
        """Learn from the usage a response to this request reported."""
        with self._lock:
            excess = (prompt_tokens - request.content_bytes) / max(1, request.parts)
            self._per_part[request.kind] = max(self._per_part.get(request.kind, excess), excess)
            key = (request.kind, request.form)
            self._fewest[key] = min(self._fewest.get(key, prompt_tokens), prompt_tokens)
            over = output_tokens - request.max_output
            self._output_over[request.kind] = max(self._output_over.get(request.kind, 0), over)


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
        self.calibration = Calibration()  # what a call may be billed at most, from what the server billed
        self._reserved = 0.0
        self._open = 0  # reservations not settled yet: with none, nothing is reserved, exactly
        self._lock = threading.Lock()

    def reserve(self, worst_case_usd: float | None) -> bool:
        with self._lock:
            if worst_case_usd is None:
                self.unknown = True
                return self.limit is None
            if self.limit is not None and self.spent + self._reserved + worst_case_usd > self.limit + 1e-12:
                return False
            self._reserved += worst_case_usd
            self._open += 1
            return True

    def settle(self, reserved_usd: float | None, actual_usd: float | None) -> None:
        with self._lock:
            if reserved_usd is not None:
                self._open -= 1
                self._reserved = max(0.0, self._reserved - reserved_usd) if self._open else 0.0  # no float residue
            if actual_usd is None:
                self.unknown = True
            else:
                self.spent += actual_usd

    @property
    def reserved(self) -> float:
        """The worst case booked for calls in flight."""
        with self._lock:
            return self._reserved

    @property
    def spent_usd(self) -> float | None:
        """Spend so far, or None when some of it had no known price."""
        return None if self.unknown else self.spent


def check_projection(projected_usd: float | None, budget_usd: float | None, model: str) -> None:
    """Refuse before the first call when the projected spend exceeds the budget.

    The projection estimates typical token counts (core/cost.py): a run over
    it would most likely be stopped by the budget part-way, so it is refused
    with the figure. A run under it is let start, and the budget, enforced
    call by call, still stops it before it passes the limit.
    """
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
            f"refused: this run is projected to cost about {usd(projected_usd)} (an estimate), over the "
            f"budget of {usd(budget_usd)}; raise --budget, use --method hierarchical, a coarser --segment, "
            "a smaller --max-tokens, or --model local (free)",
            projected_usd,
            budget_usd,
        )

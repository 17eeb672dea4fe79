"""Cost guardrail: price table, offline token estimates, projection and a hard budget.

Two token counts serve two purposes. The *estimate* (about four characters
per token) projects the spend of a run before the first call, for the
refusal message. The *bound* (one token per UTF-8 byte plus message
overhead) is never below what a byte-level BPE tokenizer can produce, so a
call is only started when its worst case still fits the budget: spend can
therefore never pass the budget, whatever the latency or concurrency.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from functools import lru_cache
from importlib import resources

from .config import Price
from .errors import BudgetRefused, UsageError

MESSAGE_OVERHEAD_TOKENS = 4
REPLY_OVERHEAD_TOKENS = 3
_SNAPSHOT = re.compile(r"\d{4}(?:-\d{2}-\d{2})?")  # gpt-4o-2024-08-06, gpt-3.5-turbo-0125


@lru_cache(maxsize=4)
def price_table(path: str | None = None) -> dict[str, dict[str, Price]]:
    """The price table: the packaged file, or $PROMPT_ATTR_PRICES when set."""
    path = path or os.environ.get("PROMPT_ATTR_PRICES")
    if path:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    else:
        raw = json.loads(resources.files(__package__).joinpath("prices.json").read_text("utf-8"))
    return {
        kind: {name: Price(**p) for name, p in raw.get(kind, {}).items()}
        for kind in ("chat", "embedding")
    }


def lookup_price(model: str, kind: str = "chat") -> Price | None:
    """Price for a model name; dated snapshots (gpt-4o-2024-08-06) match their family."""
    table = price_table()[kind]
    if model in table:
        return table[model]
    # Only a date suffix names a snapshot of the same model: o1-pro or
    # gpt-4o-audio-preview are other models at other prices, never o1 or gpt-4o.
    family = next(
        (name for name in table if model.startswith(name + "-") and _SNAPSHOT.fullmatch(model[len(name) + 1 :])),
        None,
    )
    return table[family] if family else None


def estimate_tokens(text: str) -> int:
    """A typical token count (about four characters a token), for projections."""
    return max(1, math.ceil(len(text) / 4))


def bound_tokens(text: str) -> int:
    """An upper bound on the token count: byte-level BPE never exceeds one token a byte."""
    return len(text.encode("utf-8", "surrogatepass"))


def messages_tokens(messages: list[dict], *, bound: bool) -> int:
    count = bound_tokens if bound else estimate_tokens
    return REPLY_OVERHEAD_TOKENS + sum(
        MESSAGE_OVERHEAD_TOKENS + count(m["content"]) for m in messages
    )


def call_cost(price: Price | None, prompt_tokens: int, completion_tokens: int = 0) -> float | None:
    """USD for one call, or None when the price is unknown."""
    if price is None:
        return None
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


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


def usd(amount: float | None) -> str:
    """Dollars with enough digits to be meaningful for tiny figures."""
    if amount is None:
        return "unknown"
    return f"${amount:.4f}" if amount == 0 or amount >= 0.01 else f"${amount:.6f}"


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

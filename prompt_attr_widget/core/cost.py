"""Token counts and call prices: the rules the cost guardrail is built on.

Two token counts serve two purposes. The *estimate* (about four characters
per token) projects the spend of a run before the first call, for the
refusal message. The *bound* (one token per UTF-8 byte plus message
overhead) is never below what a byte-level BPE tokenizer can produce, so a
call is only started when its worst case still fits the budget.
"""

from __future__ import annotations

import math

from .config import Price

MESSAGE_OVERHEAD_TOKENS = 4


REPLY_OVERHEAD_TOKENS = 3


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

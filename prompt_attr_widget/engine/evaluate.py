"""Evaluate: call the model for one masked prompt, through cache, limits and budget.

Order of gates for every call: the disk cache first (a hit is free and
never waits for a slot), then the concurrency semaphore and the
requests-per-minute limiter, then the budget reservation (a call that might
not fit is never started, and only calls about to start hold a
reservation), then the backend (whose SDK retries 429/5xx).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from ..backends.base import Backend, Completion, GenerationParams, TokenLogprobs
from ..core.cost import bound_tokens, call_cost, messages_tokens
from ..core.errors import PromptAttrError
from ..core.schema import Call, Spend
from ..core.text import usd
from .budget import Budget
from .cache import CallCache, cache_key


class BudgetExhausted(PromptAttrError):
    """The next call could pass the budget, so it was not made (the run stops, saved)."""

    exit_code = 3


@dataclass
class Embedded:
    vector: list[float]
    tokens: int
    cost_usd: float | None
    cache_hit: bool


class Evaluator:
    def __init__(
        self,
        backend: Backend,
        cache: CallCache,
        budget: Budget,
        params: GenerationParams,
        *,
        concurrency: int,
        rpm: float | None,
    ):
        self.backend = backend
        self.info = backend.info
        self.cache = cache
        self.budget = budget
        self.params = params
        self.semaphore = asyncio.Semaphore(concurrency)
        self.limiter = AsyncLimiter(rpm, 60) if rpm else None
        self.spend = Spend()
        self._holding = 0  # calls started and not yet settled
        self._settled = asyncio.Event()

    async def complete(self, messages: list[dict], *, repeat: int = 0) -> Call:
        """A chat completion for these messages (cached, limited, budgeted).

        `repeat` > 0 asks again for the same messages under its own cache
        key: the noise floor's repeated baselines must reach the model.
        """
        payload = {"messages": messages, "params": self.params.as_dict()}
        key = cache_key("chat", self.info, {**payload, "repeat": repeat} if repeat else payload)
        start = time.perf_counter()
        hit = self.cache.get(key)
        if hit is not None:
            self.spend.cache_hits += 1
            return Call(**hit, cost_usd=0.0, cache_hit=True, elapsed_ms=_ms(start))
        price = self.info.price
        worst = call_cost(price, messages_tokens(messages, bound=True), self.params.max_tokens)
        completion: Completion = await self._paid(worst, self.backend.complete, messages, self.params)
        prompt_tokens = completion.prompt_tokens or messages_tokens(messages, bound=True)
        completion_tokens = completion.completion_tokens or self.params.max_tokens
        cost = call_cost(price, prompt_tokens, completion_tokens)
        self._settle(worst, cost)
        self.spend.prompt_tokens += prompt_tokens
        self.spend.completion_tokens += completion_tokens
        record = {
            "output": completion.text,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "finish_reason": completion.finish_reason,
            "system_fingerprint": completion.system_fingerprint,
        }
        self.cache.set(key, record)
        return Call(**record, cost_usd=cost, elapsed_ms=_ms(start))

    async def logprob(self, messages: list[dict], continuation: str, *, repeat: int = 0) -> tuple[Call, TokenLogprobs]:
        """Teacher-forced log-probabilities of `continuation` (cached, limited, budgeted)."""
        payload = {"messages": messages, "continuation": continuation}
        key = cache_key("logprob", self.info, {**payload, "repeat": repeat} if repeat else payload)
        start = time.perf_counter()
        hit = self.cache.get(key)
        if hit is not None:
            self.spend.cache_hits += 1
            scored = TokenLogprobs(**hit)
            return Call(output=None, prompt_tokens=scored.prompt_tokens, cost_usd=0.0, cache_hit=True, elapsed_ms=_ms(start)), scored
        price = self.info.price
        bound = messages_tokens(messages, bound=True) + bound_tokens(continuation) + 1
        worst = call_cost(price, bound, 1)
        scored: TokenLogprobs = await self._paid(worst, self.backend.logprob, messages, continuation)
        prompt_tokens = scored.prompt_tokens or bound
        cost = call_cost(price, prompt_tokens, 1)
        self._settle(worst, cost)
        self.spend.prompt_tokens += prompt_tokens
        self.cache.set(key, dataclasses.asdict(scored))
        return Call(output=None, prompt_tokens=prompt_tokens, cost_usd=cost, elapsed_ms=_ms(start)), scored

    async def embed(self, text: str) -> Embedded:
        """The embedding of one answer (cached, limited, budgeted)."""
        key = cache_key("embed", self.info, {"text": text})
        hit = self.cache.get(key)
        if hit is not None:
            self.spend.cache_hits += 1
            return Embedded(vector=hit["vector"], tokens=hit["tokens"], cost_usd=0.0, cache_hit=True)
        price = self.info.embed_price
        worst = call_cost(price, bound_tokens(text) + 1)
        result = await self._paid(worst, self.backend.embed, [text])
        tokens = result.prompt_tokens or bound_tokens(text) + 1
        cost = call_cost(price, tokens)
        self._settle(worst, cost)
        self.spend.embed_tokens += tokens
        self.cache.set(key, {"vector": result.vectors[0], "tokens": tokens})
        return Embedded(vector=result.vectors[0], tokens=tokens, cost_usd=cost, cache_hit=False)

    async def _paid(self, worst_case_usd, fn, *args):
        async with self.semaphore:
            if self.limiter is not None:
                await self.limiter.acquire()
            # Reserve only once a slot is held: calls queued behind the
            # semaphore must not hold reservations, or a run with many spans
            # would stop at once although its calls fit the budget one by one.
            # While other calls are in flight their settling may free enough
            # (a worst case is booked, usually far above the real cost), so
            # wait for them; stop only when nothing else could free budget,
            # so no call already paid for is thrown away.
            while not self.budget.reserve(worst_case_usd):
                if self._holding == 0:
                    raise BudgetExhausted(
                        f"stopped before passing the budget of {usd(self.budget.limit)} "
                        f"(spent {usd(self.budget.spent)}); every result so far is saved"
                    )
                self._settled.clear()
                await self._settled.wait()
            self._holding += 1
            try:
                self.spend.calls += 1
                return await fn(*args)
            except BaseException:
                # A failed call may still have been billed; we cannot know, so keep
                # its worst case booked as spent rather than risk passing the budget.
                self._settle(worst_case_usd, worst_case_usd)
                raise

    def _settle(self, reserved_usd, actual_usd) -> None:
        """Swap a started call's reservation for its cost and wake calls waiting for budget."""
        self.budget.settle(reserved_usd, actual_usd)
        self._holding -= 1
        self._settled.set()

    def spend_snapshot(self) -> Spend:
        return self.spend.model_copy(update={"usd": self.budget.spent_usd})


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)

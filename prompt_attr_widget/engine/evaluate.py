"""Evaluate: call the model for one masked prompt, through cache, limits and budget.

Order of gates for every call: the disk cache first (a hit is free and
never waits for a slot), then the concurrency semaphore and the
requests-per-minute limiter, then the budget reservation (a call that might
not fit is never started, and only calls about to start hold a
reservation), then the backend (whose SDK retries 429/5xx).

The journal (the run store) is told of every reservation before its
request is sent and of every cost before its answer is used, so what a run
paid for is on disk whenever the process dies; a reservation that cannot be
written is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from ..backends.base import Backend, GenerationParams, TokenLogprobs
from ..core.config import Price
from ..core.cost import Request, call_cost, chat_request, embed_request, logprob_request
from ..core.errors import BrokenAnswer, PromptAttrError
from ..core.events import CallReserved, CallSettled
from ..core.reducer import count_spend
from ..core.schema import Call, Spend
from ..core.text import usd
from .budget import Budget
from .cache import CallCache, cache_key

BROKEN_BACKOFF_S = 0.25  # first wait before asking again after a broken answer; doubles


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
        retries: int = 0,
        journal: Callable[[object], None] | None = None,
    ):
        self.backend = backend
        self.info = backend.info
        self.cache = cache
        self.budget = budget
        self.params = params
        self.semaphore = asyncio.Semaphore(concurrency)
        self.limiter = AsyncLimiter(rpm, 60) if rpm else None
        self.retries = retries  # how often a broken answer is asked for again
        self.spend = Spend()
        self.journal = journal or (lambda event: None)  # CallReserved/CallSettled to disk (the run store)
        self._holding = 0  # calls started and not yet settled
        self._settled = asyncio.Event()
        self._answered: set[str] = set()  # kinds of request a response has come back for
        self._gates: dict[str, asyncio.Lock] = {}  # one request at a time of a kind not answered yet

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
        completion, prompt_tokens, completion_tokens, cost = await self._paid(
            chat_request(messages, self.params.max_tokens),
            self.info.price,
            lambda: self.backend.complete(messages, self.params),
            lambda c: (c.prompt_tokens, c.completion_tokens),
        )
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
        scored, prompt_tokens, _, cost = await self._paid(
            logprob_request(messages, continuation),
            self.info.price,
            lambda: self.backend.logprob(messages, continuation),
            lambda t: (t.prompt_tokens, t.completion_tokens),
        )
        self.cache.set(key, dataclasses.asdict(scored))
        return Call(output=None, prompt_tokens=prompt_tokens, cost_usd=cost, elapsed_ms=_ms(start)), scored

    async def probe_logprob(self, messages: list[dict], continuation: str) -> TokenLogprobs:
        """A backend's check whether its server offers log-probabilities: a billed call like the others."""
        return (await self.logprob(messages, continuation))[1]

    async def embed(self, text: str) -> Embedded:
        """The embedding of one answer (cached, limited, budgeted)."""
        key = cache_key("embed", self.info, {"text": text})
        hit = self.cache.get(key)
        if hit is not None:
            self.spend.cache_hits += 1
            return Embedded(vector=hit["vector"], tokens=hit["tokens"], cost_usd=0.0, cache_hit=True)
        result, tokens, _, cost = await self._paid(
            embed_request([text]), self.info.embed_price, lambda: self.backend.embed([text]), lambda e: (e.prompt_tokens, 0)
        )
        self.cache.set(key, {"vector": result.vectors[0], "tokens": tokens})
        return Embedded(vector=result.vectors[0], tokens=tokens, cost_usd=cost, cache_hit=False)

    async def _paid(self, request: Request, price: Price | None, send, usage):
        """Make one billed request within the budget: (result, prompt tokens, output tokens, cost).

        `send()` makes the request; `usage(result)` is the (prompt, output)
        tokens its response reported, a prompt count of 0 where it reported
        none. A broken answer (BrokenAnswer) is asked for again, up to
        `retries` times with a doubling backoff: the server billed it, so
        every attempt is booked like a new call, and one that no longer fits
        the budget is not made.
        """
        async with self.semaphore:
            if self.limiter is not None:
                await self.limiter.acquire()
            async with self._first_of(request.kind):
                for attempt in range(self.retries + 1):
                    if attempt:
                        await asyncio.sleep(BROKEN_BACKOFF_S * 2 ** (attempt - 1))
                    try:
                        return await self._attempt(request, price, send, usage)
                    except BrokenAnswer as exc:
                        broken = exc
                raise broken.after(self.retries + 1) from None

    async def _attempt(self, request: Request, price: Price | None, send, usage):
        """One attempt: reserved (on disk first), sent, settled at its cost (on disk before its answer).

        The reservation is the request's bound at the moment it starts
        (calibrated from every response before it), and the response then
        calibrates the bounds of the requests after it.
        """
        bound, worst = await self._reserve(request, price)
        self._holding += 1
        try:
            self._book(CallReserved(kind=request.kind, usd=worst))  # on disk before it can be billed
        except BaseException:
            self._settle(worst, 0.0)  # never sent
            raise
        try:
            result = await send()
        except BaseException as exc:
            # A failed call may still have been billed; we cannot know, so keep
            # its worst case booked as spent rather than risk passing the budget.
            # Only a request the server refused outright (BackendError.unbilled) cost nothing.
            cost = 0.0 if getattr(exc, "unbilled", False) and worst is not None else worst
            self._settle(worst, cost)
            with contextlib.suppress(Exception):  # unwritten, its reservation on disk still counts it
                self._book(CallSettled(kind=request.kind, reserved_usd=worst, usd=cost))
            raise
        self._answered.add(request.kind)
        prompt_tokens, output_tokens = usage(result)
        if prompt_tokens > 0:
            self.budget.calibration.observe(request, prompt_tokens, output_tokens)
        else:
            # The response reported no usage: what the server billed is unknown,
            # so the call counts at its bound, and the bounds stay where they were
            # (conservative until some response of this kind reports its usage).
            prompt_tokens, output_tokens = bound
        cost = call_cost(price, prompt_tokens, output_tokens)
        self._settle(worst, cost)
        self._book(CallSettled(kind=request.kind, reserved_usd=worst, usd=cost,
                                prompt_tokens=prompt_tokens, completion_tokens=output_tokens))
        return result, prompt_tokens, output_tokens, cost

    def _book(self, event) -> None:
        """Write a CallReserved/CallSettled to the journal, then count it (only once it is written:
        a request whose reservation could not be written is never sent)."""
        self.journal(event)
        count_spend(self.spend, event)

    async def _reserve(self, request: Request, price: Price | None) -> tuple[tuple[int, int], float | None]:
        """Book the request's worst case, waiting while calls in flight may free budget.

        Reserve only once a slot is held: calls queued behind the semaphore
        must not hold reservations, or a run with many spans would stop at
        once although its calls fit the budget one by one. While other calls
        are in flight their settling may free enough (a worst case is booked,
        usually far above the real cost), so wait for them; stop only when
        nothing else could free budget, so no call already paid for is thrown
        away. The bound is taken again after each wait: the responses that
        came back meanwhile may have calibrated it.
        """
        while True:
            bound = self.budget.calibration.tokens(request)
            worst = call_cost(price, *bound)
            if self.budget.reserve(worst):
                return bound, worst
            if self._holding == 0:
                raise BudgetExhausted(
                    f"stopped before passing the budget of {usd(self.budget.limit)} "
                    f"(spent {usd(self.budget.spent)}); every result so far is saved"
                )
            self._settled.clear()
            await self._settled.wait()

    @contextlib.asynccontextmanager
    async def _first_of(self, kind: str):
        """Until a response of this kind has come back, its requests are made one at a time.

        Before the first response a request's bound is the conservative one,
        an assumption about the server's template; its response shows what
        the server really bills. Were a server to bill beyond that assumption,
        only the one request in flight could pass its reservation, never as
        many as the concurrency allows: the next is bounded by what the first
        was billed. A run's first request of each kind (its baseline, the
        baseline's embedding or scoring call) is made alone anyway.
        """
        if kind in self._answered:
            yield
            return
        gate = self._gates.setdefault(kind, asyncio.Lock())
        await gate.acquire()
        held = kind not in self._answered  # a request ahead answered while this one waited: no gate now
        if not held:
            gate.release()
        try:
            yield
        finally:
            if held:
                gate.release()

    def _settle(self, reserved_usd, actual_usd) -> None:
        """Swap a started call's reservation for its cost and wake calls waiting for budget."""
        self.budget.settle(reserved_usd, actual_usd)
        self._holding -= 1
        self._settled.set()

    def spend_snapshot(self) -> Spend:
        """This session's spend: billed so far, and the worst case of the calls still in flight."""
        return self.spend.model_copy(update={"usd": self.budget.spent_usd, "reserved_usd": self.budget.reserved})


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)

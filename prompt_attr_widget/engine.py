"""The engine: one async stream of typed events from prompt to attribution.

segment → plan → evaluate (concurrent, cached, budgeted) → score → estimate.
The engine knows nothing of its sinks; the run store, the widget and the
CLI each consume the same events. Errors never escape as exceptions once
the run has started: they end the stream with RunFailed or RunAborted, so
every sink can close the run cleanly with what was already paid for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from ._version import __version__
from .backends.base import Backend, GenerationParams
from .backends.openai import public_url
from .cache import CallCache
from .config import AttributionConfig
from .cost import Budget, call_cost, check_projection, messages_tokens
from .errors import PromptAttrError
from .estimate import attribute_spans
from .evaluate import BudgetExhausted, Embedded, Evaluator
from .events import (
    BaselineDone,
    Estimate,
    Evaluated,
    Progress,
    RunAborted,
    RunFailed,
    RunFinished,
    RunStarted,
)
from .plan import Group, leave_one_out, select_for_refinement, split, worst_case_groups
from .schema import BackendRecord, Evaluation, RunRecord
from .score import cosine, distance_score
from .segment import Span, render, segment


def prompt_sha256(prompt: str, config: AttributionConfig, spans: list[Span]) -> str:
    """SHA-256 of the canonical bundle that decides a run's answers."""
    bundle = {
        "prompt": prompt,
        "system": config.system,
        "segmentation": [[s.start, s.end] for s in spans],
        "model": config.model,
        "base_url": public_url(config.base_url),
        "params": {"max_tokens": config.max_tokens, "temperature": config.temperature, "seed": config.seed},
    }
    blob = json.dumps(bundle, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def messages_for(prompt_text: str, system: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt_text}]


class _Run:
    """State of one run while its events stream."""

    def __init__(self, prompt, config, backend, cache, run_id):
        self.prompt, self.config, self.backend, self.run_id = prompt, config, backend, run_id
        self.params = GenerationParams(config.max_tokens, config.temperature, config.seed)
        self.budget = Budget(config.budget)
        self.evaluator = Evaluator(
            backend, cache, self.budget, self.params, concurrency=config.concurrency, rpm=config.rpm
        )
        self.timings: dict[str, float] = {}
        self.evaluated: dict[Group, Evaluation] = {}
        self.started = time.perf_counter()
        self.done = 0
        self.planned = 0

    def _timed(self, stage: str, since: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + (time.perf_counter() - since) * 1000, 3)

    def header(self) -> tuple[RunRecord, int]:
        t = time.perf_counter()
        c = self.config
        self.spans = segment(self.prompt, c.segment, window_tokens=c.window_tokens, spans=c.spans)
        self._timed("segment_ms", t)
        t = time.perf_counter()
        n = len(self.spans)
        small = n <= 2 / c.group_fraction
        worst = n if c.method == "loo" or small else worst_case_groups(n, self.spans, self.prompt, c.group_fraction)
        self._timed("plan_ms", t)
        info = self.backend.info
        record = RunRecord(
            run_id=self.run_id,
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            library_version=__version__,
            prompt=self.prompt,
            system=c.system,
            prompt_sha256=prompt_sha256(self.prompt, c, self.spans),
            config={**c.model_dump(mode="json"), "base_url": public_url(c.base_url)},  # no credentials
            backend=BackendRecord(
                backend=info.backend,
                model=info.model,
                embed_model=info.embed_model,
                base_url=info.base_url,
                fingerprint=dict(info.fingerprint),
            ),
            spans=self.spans,
            projected_usd=self.projected_cost(worst),
        )
        return record, worst

    def projected_cost(self, evaluations: int) -> float | None:
        """Upper-bound spend: every planned call at full prompt length and max_tokens."""
        info = self.backend.info
        prompt_tokens = messages_tokens(messages_for(self.prompt, self.config.system), bound=False)
        chat = call_cost(info.price, prompt_tokens, self.config.max_tokens)
        embed = call_cost(info.embed_price, self.config.max_tokens)
        if chat is None or embed is None:
            return None
        return (evaluations + 1) * (chat + embed)

    async def baseline(self):
        t = time.perf_counter()
        self.base_call = await self.evaluator.complete(messages_for(self.prompt, self.config.system))
        self.base_vec: Embedded = await self.evaluator.embed(self.base_call.output)
        self.base_call.embed_tokens = self.base_vec.tokens
        if self.base_vec.cost_usd and self.base_call.cost_usd is not None:
            self.base_call.cost_usd += self.base_vec.cost_usd
        self._timed("baseline_ms", t)
        return self.base_call

    async def evaluate(self, group: Group, round_: int) -> tuple[Group, Evaluation]:
        keep = group.keep_mask(len(self.spans))
        text = render(self.prompt, self.spans, keep)
        call = await self.evaluator.complete(messages_for(text, self.config.system))
        if call.output == self.base_call.output:
            cos, embed = 1.0, None  # identical answer: distance 0, no embedding needed
        else:
            embed = await self.evaluator.embed(call.output)
            cos = cosine(self.base_vec.vector, embed.vector)
        cost = call.cost_usd
        if embed is not None:
            cost = None if cost is None or embed.cost_usd is None else cost + embed.cost_usd
        return group, Evaluation(
            **call.model_dump(exclude={"cost_usd", "embed_tokens"}),
            cost_usd=cost,
            embed_tokens=embed.tokens if embed else 0,
            id=-1,  # numbered in order of arrival by run_pass
            round=round_,
            dropped=list(group.dropped),
            score=distance_score(cos),
            cosine=cos,
        )

    async def run_pass(self, groups: list[Group], round_: int) -> AsyncIterator:
        """Evaluate groups concurrently, yielding events as results arrive."""
        todo = [g for g in groups if g not in self.evaluated]
        self.planned = self.done + len(todo)
        t = time.perf_counter()
        # Ordered by keep-mask so consecutive calls share long prompt prefixes
        # (llama.cpp reuses the KV cache of the common prefix).
        tasks = [asyncio.ensure_future(self.evaluate(g, round_)) for g in sorted(todo, key=lambda g: -g.start)]
        try:
            for next_done in asyncio.as_completed(tasks):
                group, ev = await next_done
                ev.id = len(self.evaluated)
                self.evaluated[group] = ev
                self.done += 1
                yield Evaluated(evaluation=ev)
                yield self.progress()
        finally:
            for task in tasks:
                task.cancel()
            self._timed("evaluate_ms", t)

    def progress(self) -> Progress:
        elapsed = time.perf_counter() - self.started
        remaining = self.planned - self.done
        eta = elapsed / self.done * remaining if self.done else None
        spend = self.evaluator.spend_snapshot()
        return Progress(
            done=self.done,
            planned=self.planned,
            calls=spend.calls,
            cache_hits=spend.cache_hits,
            spend_usd=spend.usd,
            elapsed_s=round(elapsed, 3),
            eta_s=None if eta is None else round(eta, 3),
        )

    def estimate(self, round_: int) -> Estimate:
        return Estimate(round=round_, attribution=attribute_spans(len(self.spans), self.evaluated))

    async def passes(self) -> AsyncIterator:
        n = len(self.spans)
        if self.config.method == "loo" or n <= 2 / self.config.group_fraction:
            # With this few spans a coarse pass cannot save calls: go straight to LOO.
            async for event in self.run_pass(leave_one_out(n), 0):
                yield event
            yield self.estimate(0)
            return
        frontier, round_ = [Group(0, n)], 0
        while frontier:
            groups = [part for g in frontier for part in split(g, self.spans, self.prompt, self.config.group_fraction)]
            async for event in self.run_pass(groups, round_):
                yield event
            yield self.estimate(round_)
            impacts = {g: self.evaluated[g].score for g in groups}
            frontier = select_for_refinement(impacts, self.config.refine_threshold)
            round_ += 1

    def total_timings(self) -> dict[str, float]:
        self.timings["total_ms"] = round((time.perf_counter() - self.started) * 1000, 3)
        return dict(self.timings)


async def run_events(
    prompt: str,
    config: AttributionConfig,
    backend: Backend,
    *,
    cache: CallCache,
    run_id: str,
) -> AsyncIterator:
    """Stream the events of one attribution run.

    Usage errors found before the first call (empty prompt, bad spans, a
    projection over budget) raise; once RunStarted is out, every ending is
    an event.
    """
    run = _Run(prompt, config, backend, cache, run_id)
    record, worst = run.header()
    check_projection(record.projected_usd, config.budget, config.model)
    yield RunStarted(record=record, planned=worst)
    try:
        yield BaselineDone(baseline=await run.baseline())
        async for event in run.passes():
            yield event
    except BudgetExhausted as exc:
        if run.evaluated:  # the attribution of what was paid for, not an empty heat-map
            yield run.estimate(max(ev.round for ev in run.evaluated.values()))
        yield RunAborted(reason=str(exc), spend=run.evaluator.spend_snapshot(), timings_ms=run.total_timings())
        return
    except PromptAttrError as exc:
        yield RunFailed(error=str(exc), spend=run.evaluator.spend_snapshot(), timings_ms=run.total_timings())
        return
    yield RunFinished(spend=run.evaluator.spend_snapshot(), timings_ms=run.total_timings())

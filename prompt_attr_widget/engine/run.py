"""The engine: one async stream of typed events from prompt to attribution.

segment → plan → evaluate (concurrent, cached, budgeted) → score → estimate.
The engine knows nothing of its sinks; the run store, the widget and the
CLI each consume the same events. Errors never escape as exceptions once
the run has started: they end the stream with RunFailed or RunAborted, so
every sink can close the run cleanly with what was already paid for. A run
stopped from outside the stream (an interrupt, a crash in a sink) is ended
by its caller with the run's own closing events (`RunStream`).

The parts: the plan (plan.py), the scorer (scorers.py), the concurrent
batches (batches.py), the spend and timings over sessions (ledger.py); the
run here strings them into stages: baseline, noise, passes, faithfulness.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from ..backends.base import Backend, GenerationParams
from ..core.config import AttributionConfig
from ..core.errors import BudgetRefused, PromptAttrError, UsageError
from ..core.events import (
    BaselineDone,
    Estimate,
    Evaluated,
    FaithfulnessMeasured,
    NoiseMeasured,
    Progress,
    RunAborted,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
)
from ..core.identity import prompt_sha256, public_url
from ..core.schema import BackendRecord, Evaluation, Faithfulness, RunRecord, Spend
from ..core.text import usd
from ..core.version import __version__
from ..stages.behaviour import checks_of, difference, judge, next_checks
from ..stages.estimate import estimate
from ..stages.faithfulness import RANDOM_DRAWS, predicted, random_subsets, spearman, top_k
from ..stages.noise import default_repeats, noise_floor, null_bound, pairwise
from ..stages.plan import (
    Group,
    leave_one_out,
    prefix_order,
    random_masks,
    select_for_refinement,
    split,
)
from ..stages.score import resolve_target
from ..stages.segment import segment
from ..stages.surrogate import BOOTSTRAP
from .batches import Batches
from .budget import Budget, check_projection
from .cache import CallCache
from .evaluate import BudgetExhausted, Evaluator
from .ledger import Ledger
from .plan import Plan
from .scorers import LogprobScorer, Scorer, choose_scorer, resumed_scorer

LIVE_REFIT_EVERY = 8  # surrogate runs refit and send an estimate every this many masks


class _Run:
    """State of one run while its events stream."""

    def __init__(self, prompt, config, backend, cache, run_id, scorer: Scorer | None, stored: RunRecord | None = None,
                 journal=None):
        self.prompt, self.config, self.backend, self.run_id = prompt, config, backend, run_id
        self.scorer = scorer
        self.stored = stored  # a stopped run being resumed: its results are reused, never re-paid
        self.params = GenerationParams(config.max_tokens, config.temperature, config.seed)
        self.budget = Budget(config.budget)
        self.evaluator = Evaluator(
            backend, cache, self.budget, self.params, concurrency=config.concurrency, rpm=config.rpm,
            retries=config.max_retries, journal=journal,
        )
        self.ledger = Ledger(self.evaluator, stored)
        self.batches = Batches(config.concurrency)
        self.repeats = config.noise_repeats or default_repeats(backend.info.backend)
        self.plan: Plan | None = None  # made by `header`, once the prompt is segmented
        self.at_most = 0  # evaluations the plan may make at most (the passes may make fewer)
        self.evaluated: dict[tuple[int, ...], Evaluation] = {}  # attribution evaluations by deleted spans
        self.checks: dict[tuple[int, ...], Evaluation] = {}  # faithfulness evaluations
        self.behaviour: dict[tuple[int, ...], Evaluation] = {}  # behavioural checks: answers without spans
        self.judging = False  # estimates carry the behavioural verdicts once the check has begun
        self.noise = None
        self.noise_points: list = []  # what each repeated baseline answered, in the scorer's terms
        self.noise_calls: list = []  # and the calls themselves (their answers, where generated)
        self.scores: list = []

    @property
    def spans(self):
        return self.plan.spans

    @property
    def unreported(self) -> list[Evaluated]:
        return self.batches.unreported

    @unreported.setter
    def unreported(self, events: list[Evaluated]) -> None:
        self.batches.unreported = events

    # --- plan ---------------------------------------------------------------------------------

    def header(self) -> tuple[RunRecord, int]:
        """Segment and plan; the run's record as it starts, and the evaluations it may make at most."""
        worst = self._segment_and_plan()
        return self._record(worst), worst

    def _segment_and_plan(self) -> int:
        t = time.perf_counter()
        c = self.config
        spans = segment(self.prompt, c.segment, window_tokens=c.window_tokens, spans=c.spans)
        if self.stored is not None and spans != self.stored.spans:
            raise UsageError(
                f"run {self.run_id} was segmented differently from what this version of prompt_attr "
                "gives for its prompt and options, so it cannot be resumed: start a new run"
            )
        self.ledger.timed("segment_ms", t)
        t = time.perf_counter()
        self.plan = Plan(self.prompt, c, spans, self.repeats)
        worst = self.at_most = self.plan.evaluations()
        self.ledger.timed("plan_ms", t)
        return worst

    def _record(self, worst: int) -> RunRecord:
        c, info = self.config, self.backend.info
        return RunRecord(
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
            scorer=self.scorer.name,
            score_unit=self.scorer.unit,
        )

    def projected_cost(self, evaluations: int) -> float | None:
        """Estimated spend of these evaluations, the baseline (and its scoring call) added."""
        return self.plan.projected_cost(evaluations, self.backend.info, 1 + self.scorer.scores_baseline)

    # --- measuring ----------------------------------------------------------------------------

    async def baseline(self) -> AsyncIterator:
        """The baseline answer, the target within it, and what later scores compare against."""
        t = time.perf_counter()
        stored = self.stored.baseline if self.stored is not None else None
        messages = self.plan.messages(())
        self.base_call = stored or await self.evaluator.complete(messages)
        try:
            self.target = resolve_target(self.base_call.output, self.config.target)
        except UsageError:
            if stored is None:
                yield BaselineDone(baseline=self.base_call)  # paid for: stored even though the run stops
            raise
        await self.scorer.prepare(self.evaluator, messages, self.base_call, self.target)
        self.ledger.timed("baseline_ms", t)
        if stored is None:
            yield BaselineDone(baseline=self.base_call, target=self.target, tokens=self.scorer.answer_tokens)

    async def measure(self, dropped: tuple[int, ...], purpose: str, round_: int, repeat: int = 0,
                      messages: list[dict] | None = None) -> Evaluation:
        """Score the prompt with these spans deleted (or these messages: a placebo) against the baseline."""
        m = await self.scorer.measure(self.evaluator, messages or self.plan.messages(dropped), repeat=repeat)
        if purpose == "noise":
            self.noise_points.append(m.point)
            self.noise_calls.append(m.call)
        return Evaluation(
            **m.call.model_dump(),
            id=-1,  # numbered in order of arrival by Batches.run
            round=round_,
            dropped=list(dropped),
            score=m.score,
            purpose=purpose,
            repeat=repeat,
            **m.extra,
        )

    async def _stream(self, jobs: list) -> AsyncIterator:
        """Run measurements concurrently, yielding events as results arrive."""
        t = time.perf_counter()
        try:
            async for ev in self.batches.run(jobs):
                yield Evaluated(evaluation=ev)
                yield self.progress()
        finally:
            self.halt()
            self.ledger.timed("evaluate_ms", t)

    def halt(self) -> None:
        """Cancel the measurements in flight; answers already back are kept (see Batches.halt)."""
        self.batches.halt()

    async def run_pass(self, masks: list[tuple[int, ...]], round_: int, purpose: str = "attribution") -> AsyncIterator:
        """Evaluate masks not evaluated yet, concurrently."""
        store = self.evaluated if purpose == "attribution" else self.checks
        todo = prefix_order([m for m in dict.fromkeys(masks) if m not in self.evaluated and m not in self.checks],
                            len(self.spans))
        async for event in self._stream([self.measure(m, purpose, round_) for m in todo]):
            if isinstance(event, Evaluated):
                store[tuple(event.evaluation.dropped)] = event.evaluation
            yield event

    async def measure_noise(self) -> AsyncIterator:
        """Ask for the baseline again `repeats - 1` times (how far the answers differ is noise) and
        score `null_samples` placebo copies of the prompt (what an irrelevant deletion does)."""
        if self.stored is not None and self.stored.noise is not None:
            self.noise = self.stored.noise
            return
        stored = [e for e in self.stored.evaluations if e.purpose in ("noise", "placebo")] if self.stored else []
        repeats = [e for e in stored if e.purpose == "noise"]
        self.noise_points = [await self.scorer.stored_point(self.evaluator, e) for e in repeats]
        placebo = {e.repeat: e for e in stored if e.purpose == "placebo"}
        answer = self.base_call.output or ""
        jobs = [self.measure((), "noise", -1, repeat=r) for r in range(1, self.repeats)
                if r not in {e.repeat for e in repeats}]
        jobs += [self.measure((), "placebo", -1, repeat=k, messages=self.plan.placebo_messages(k, answer))
                 for k in range(self.config.null_samples) if k not in placebo]
        async for event in self._stream(jobs):
            if isinstance(event, Evaluated) and event.evaluation.purpose == "placebo":
                placebo[event.evaluation.repeat] = event.evaluation
            yield event
        samples = pairwise([self.scorer.baseline_point(), *self.noise_points], self.scorer.distance)
        min_effect = self.config.min_effect if self.config.min_effect is not None else self.scorer.min_effect
        self.noise = noise_floor(samples, self.repeats, min_effect, [placebo[k].score for k in sorted(placebo)])
        yield NoiseMeasured(noise=self.noise)

    # --- passes -------------------------------------------------------------------------------

    def estimate(self, round_: int, *, live: bool = False) -> Estimate:
        c = self.config
        scores, fit = estimate(
            c.method, len(self.spans), list(self.evaluated.values()), self.noise,
            masks=self.plan.masks, keep_prob=c.keep_prob, seed=c.seed, bootstrap=0 if live else BOOTSTRAP,
        )
        checks = checks_of([*self.evaluated.values(), *self.behaviour.values()])
        if self.judging and checks:
            scores = judge(scores, checks, self.base_call.output or "", self.target.text if self.target else None,
                           self.noise_answers(), c.behaviour_checks)
        self.scores = scores  # (the final surrogate fit runs in a thread: return its own scores, not the attribute)
        return Estimate(round=round_, attribution=scores, surrogate=fit)

    def noise_answers(self) -> list[str]:
        """What the repeated baselines answered, where the scorer generated them."""
        return [e.output for e in self.noise_calls if e.output is not None]

    async def passes(self) -> AsyncIterator:
        n, c = len(self.spans), self.config
        if c.method == "surrogate":
            async for event in self.run_pass(self.plan.masks, 0):
                yield event
                if isinstance(event, Evaluated) and len(self.evaluated) % LIVE_REFIT_EVERY == 0:
                    yield self.estimate(0, live=True)  # the heat-map fills in while masks arrive
            yield await asyncio.to_thread(self.estimate, 0)  # the bootstrap runs off the event loop
            return
        if self.plan.straight_to_loo():
            async for event in self.run_pass([g.dropped for g in leave_one_out(n)], 0):
                yield event
            yield self.estimate(0)
            return
        frontier, round_ = [Group(0, n)], 0
        while frontier:
            groups = [part for g in frontier for part in split(g, self.spans, self.prompt, c.group_fraction)]
            async for event in self.run_pass([g.dropped for g in groups], round_):
                yield event
            yield self.estimate(round_)
            impacts = {g: self.evaluated[g.dropped].score for g in groups}
            frontier = select_for_refinement(impacts, c.refine_threshold)
            round_ += 1

    async def check_behaviour(self) -> AsyncIterator:
        """Generate without the top significant spans: does the answer change (stages/behaviour.py)?
        Two rounds at most: the spans one by one, then those that changed nothing, together
        (or the one that changed nothing with its likeliest partner)."""
        limit = self.config.behaviour_checks
        if limit <= 0 or not self.scores or self.base_call.output is None:
            return
        self.judging = True
        last = max(ev.round for ev in self.evaluated.values())
        yield self.estimate(last)  # the verdicts of answers the deletions generated anyway
        for _ in range(2):
            todo = next_checks(self.scores, limit, len(self.behaviour), null_bound(self.noise))
            if not todo:
                break
            async for event in self._stream([self.generate(d) for d in todo]):
                if isinstance(event, Evaluated):
                    self.behaviour[tuple(event.evaluation.dropped)] = event.evaluation
                yield event
            yield self.estimate(last)

    async def generate(self, dropped: tuple[int, ...]) -> Evaluation:
        call = await self.evaluator.complete(self.plan.messages(dropped))
        target = self.target.text if self.target else None
        changed = difference(self.base_call.output or "", call.output or "", target) is not None  # (as stored)
        return Evaluation(**call.model_dump(), id=-1, round=-1, dropped=list(dropped), score=float(changed),
                          purpose="behaviour")

    async def check_faithfulness(self) -> AsyncIterator:
        """Top-k deletion against random deletions; LDS on held-out masks when asked."""
        c, n = self.config, len(self.spans)
        if c.faithfulness == "off" or not self.scores:
            return
        top = tuple(top_k(self.scores, n))
        randoms = random_subsets(n, len(top), RANDOM_DRAWS[c.faithfulness], c.seed + 2)
        heldout = random_masks(n, c.heldout_masks, c.keep_prob, c.seed + 3) if c.faithfulness == "full" else []
        async for event in self.run_pass([top, *randoms], -1, "faithfulness"):
            yield event
        async for event in self.run_pass(heldout, -1, "heldout"):
            yield event
        found = {**self.checks, **self.evaluated}
        lds = None
        if heldout:
            by_span = {s.index: s.score for s in self.scores}
            lds = spearman(predicted(heldout, by_span), [found[m].score for m in heldout])
        yield FaithfulnessMeasured(
            faithfulness=Faithfulness(
                k=len(top),
                top_k=list(top),
                top_k_score=found[top].score,
                random_scores=[found[m].score for m in randoms],
                lds=lds,
                heldout=len(heldout),
            )
        )

    # --- sessions: resume, spend, ending ------------------------------------------------------

    def restore(self) -> None:
        """Take a stopped run's stored evaluations as done: they are reused, never asked again."""
        for e in self.stored.evaluations:
            if e.purpose == "attribution":
                self.evaluated[tuple(e.dropped)] = e
            elif e.purpose in ("faithfulness", "heldout"):
                self.checks[tuple(e.dropped)] = e
            elif e.purpose == "behaviour":
                self.behaviour[tuple(e.dropped)] = e
            elif e.purpose == "noise":
                self.noise_calls.append(e)
        self.batches.done = max((e.id for e in self.stored.evaluations), default=-1) + 1
        self.ledger.restore()

    def spend(self) -> Spend:
        """Spend so far, every session of the run included (see Ledger.spend)."""
        return self.ledger.spend()

    def progress(self) -> Progress:
        """Done of planned evaluations: planned is the plan's upper bound until the passes
        have planned more (never less), so a progress bar never goes backwards when a
        hierarchical pass plans the next one."""
        return self.ledger.progress(self.batches.done, max(self.batches.planned, self.at_most))

    def total_timings(self) -> dict[str, float]:
        """Milliseconds per stage, summed over every session of the run."""
        return self.ledger.total_timings()

    async def settle(self) -> None:
        """After the stream was closed from outside: wait for the cancelled calls to stop."""
        await self.batches.settle()

    async def wind_down(self) -> list[Evaluated]:
        """After a stop inside the stream (the budget, a failure): wait for the calls cut off to
        stop, and hand over the answers that came back but were not streamed yet.

        Calls of the batch may still be in flight, or may even have started after the stop was
        decided (a smaller request fits where the stopped one did not): they reached the server,
        so they are paid for, and the spend reported next must hold them (a call cut off books
        its worst case when it stops, see Evaluator._paid). Their answers are stored too.
        """
        await self.batches.settle()
        events, self.unreported[:] = list(self.unreported), []
        for reported in events:
            e = reported.evaluation
            if e.purpose == "attribution":
                self.evaluated.setdefault(tuple(e.dropped), e)
            elif e.purpose in ("faithfulness", "heldout"):
                self.checks.setdefault(tuple(e.dropped), e)
        return events

    def closing_events(self, status: str, reason: str) -> list:
        """The events that end a run stopped outside its stream (an interrupt, a crash in a sink):
        the estimate of what was evaluated (answers that came back unreported included), so the
        run replays with its scores, and the ending with the spend and timings."""
        for reported in self.unreported:
            e = reported.evaluation
            if e.purpose == "attribution":
                self.evaluated.setdefault(tuple(e.dropped), e)
        events = [self.estimate(max(ev.round for ev in self.evaluated.values()))] if self.evaluated else []
        return [*events, ending(status, reason, self.spend(), self.total_timings())]


def ending(status: str, reason: str, spend: Spend, timings_ms: dict[str, float]):
    """The event that ends a run stopped outside its stream: RunAborted or RunFailed."""
    if status == "aborted":
        return RunAborted(reason=reason, spend=spend, timings_ms=timings_ms)
    return RunFailed(error=reason, spend=spend, timings_ms=timings_ms)


class RunStream:
    """One run's events, with the run behind them for the caller that has to stop it.

    `events()` streams the run (see `run_events`). A caller that stops the
    stream from outside (an interrupt, a crash in one of its sinks) calls
    `aclose()`, stores `unreported` (answers that came back but were never
    streamed: paid for), then ends the run with `closing_events(status,
    reason)`: the live run's own estimate, spend and timings, earlier
    sessions of a resumed run included, never a recount from what was stored.
    """

    def __init__(
        self,
        prompt: str,
        config: AttributionConfig,
        backend: Backend,
        *,
        cache: CallCache,
        run_id: str,
        stored: RunRecord | None = None,
        rerun_of: str | None = None,
        journal=None,
    ):
        self.run: _Run | None = None  # set by run_events once the run is made
        self.unreported: list[Evaluated] = []
        self._events = run_events(prompt, config, backend, cache=cache, run_id=run_id, stored=stored,
                                  unreported=self.unreported, rerun_of=rerun_of, handle=self, journal=journal)

    def events(self) -> AsyncIterator:
        return self._events

    async def aclose(self) -> None:
        """Stop the stream: the run cancels its calls and keeps answers already back in `unreported`."""
        with contextlib.suppress(BaseException):
            await self._events.aclose()
        if self.run is not None:
            await self.run.settle()

    def closing_events(self, status: str, reason: str) -> list:
        """The events that end the stopped run: the estimate of what it evaluated, and RunAborted
        (status "aborted") or RunFailed with its spend."""
        if self.run is None:  # stopped before the run was made: nothing was asked or paid for
            return [ending(status, reason, Spend(), {})]
        return self.run.closing_events(status, reason)


async def run_events(
    prompt: str,
    config: AttributionConfig,
    backend: Backend,
    *,
    cache: CallCache,
    run_id: str,
    stored: RunRecord | None = None,
    unreported: list | None = None,
    rerun_of: str | None = None,
    handle: RunStream | None = None,
    journal=None,
) -> AsyncIterator:
    """Stream the events of one attribution run.

    Usage errors found before the first call (empty prompt, bad spans, a
    projection over budget) raise; once RunStarted (or RunResumed) is out,
    every ending is an event. With `stored`, a stopped run continues: its
    baseline, noise floor and evaluations are reused and only the rest is
    asked for. Answers that arrive while the stream is being stopped are
    appended to `unreported`, so the caller can store what was paid for.
    `handle` (a RunStream) is given the run once it is made, so the caller
    can end a run it stopped with the run's own closing events. `journal`
    is called, synchronously, with every billed request's CallReserved
    before it is sent and its CallSettled before its answer is used: the
    run store writes them, so spend survives a kill.
    """
    info = backend.info
    if config.budget is not None and (info.price is None or info.embed_price is None):
        check_projection(None, config.budget, config.model)  # no price: say so before any request
    run = _Run(prompt, config, backend, cache, run_id, None, stored, journal)  # its scorer is chosen below
    if unreported is not None:
        run.unreported = unreported
    if handle is not None:
        handle.run = run
    if stored is not None:
        run.restore()  # the earlier sessions' dollars are in the budget before any request
    worst = run._segment_and_plan()
    run.scorer = await _choose_scorer(run, stored)
    record = run._record(worst)
    record.rerun_of = rerun_of
    if stored is None:
        check_projection(record.projected_usd, config.budget, config.model)
        yield RunStarted(record=record, planned=worst)
    else:
        remaining = max(0, worst - len(stored.evaluations))
        left = None if config.budget is None else max(0.0, config.budget - (stored.spend.counted_usd or 0.0))
        check_projection(run.projected_cost(remaining), left, config.model)
        yield RunResumed(at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), planned=worst)
    try:
        for stage in (run.baseline, run.measure_noise, run.passes, run.check_behaviour, run.check_faithfulness):
            async for event in stage():
                yield event
    except GeneratorExit:
        run.halt()  # closed by the consumer (an interrupt): stop paying, keep what came back
        raise
    except BudgetExhausted as exc:
        for event in await run.wind_down():
            yield event
        if run.evaluated:  # the attribution of what was paid for, not an empty heat-map
            yield run.estimate(max(ev.round for ev in run.evaluated.values()))
        yield RunAborted(reason=str(exc), stopped_by="budget", spend=run.spend(), timings_ms=run.total_timings())
        return
    except PromptAttrError as exc:
        for event in await run.wind_down():
            yield event
        yield RunFailed(error=str(exc), spend=run.spend(), timings_ms=run.total_timings())
        return
    yield RunFinished(spend=run.spend(), timings_ms=run.total_timings())


async def _choose_scorer(run: _Run, stored: RunRecord | None) -> Scorer:
    """The run's scorer (a stored run's, if still offered). A backend that asks its server
    whether it offers log-probabilities does so through the run's evaluator: a billed call,
    within the budget like every other; a budget that cannot cover even that is refused."""
    config, backend, probe = run.config, run.backend, run.evaluator.probe_logprob
    try:
        if stored is None:
            return await choose_scorer(config, backend, probe)
        return await resumed_scorer(stored.scorer, config, backend, probe)  # still available?
    except BudgetExhausted:
        budget = run.budget
        left = max(0.0, budget.limit - budget.spent)
        projected = run.plan.projected_cost(run.plan.evaluations(), backend.info, 1 + LogprobScorer.scores_baseline)
        check_projection(projected, left, config.model)
        raise BudgetRefused(
            f"refused: the budget of {usd(left)} does not cover the request that checks whether "
            f"{config.model} offers log-probabilities; raise --budget, or use --scorer embedding",
            projected,
            left,
        ) from None


async def score_deletions(
    prompt: str,
    deletions: list[list[int]],
    config: AttributionConfig,
    backend: Backend,
    *,
    cache: CallCache,
) -> tuple[list[float], str]:
    """Scores of chosen deletions (sets of span indices) against the baseline, and the scorer.

    The same scoring as a run, without a run: for what-if questions ("what
    if I delete these two sentences together?") and for benchmarks.
    """
    run = _Run(prompt, config, backend, cache, "what-if", await choose_scorer(config, backend))
    run.header()
    n = len(run.spans)
    for d in deletions:
        if any(not 0 <= i < n for i in d):
            raise UsageError(f"deletion {list(d)} names spans outside 0..{n - 1}")
    async for _ in run.baseline():
        pass
    evaluations = await asyncio.gather(*(run.measure(tuple(sorted(set(d))), "attribution", 0) for d in deletions))
    return [e.score for e in evaluations], run.scorer.name

"""Scorers: how the answer to a prompt with spans deleted is scored against the baseline.

One class per scorer (the formulas and their units are described in
stages/score.py). A run chooses its scorer once (`choose_scorer`) and asks
it everything that differs between scorers: its unit and the smallest
effect worth reporting, whether deleted-span prompts are answered at all,
what it keeps of the baseline answer (`prepare`), how it scores a masked
prompt (`measure`), and how far apart two repeated baselines are (the noise
floor's `distance`). Every call goes through the run's evaluator, so it is
cached, limited and budgeted. A new scorer is one subclass, named in
SCORERS.

A scorer object belongs to one run: `prepare` stores the baseline it
compares against.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..backends.base import Backend, LogprobBackend
from ..core.config import AttributionConfig
from ..core.errors import BackendError, UsageError
from ..core.schema import AnswerTokens, Call, Evaluation, Target, TokenValues
from ..stages.score import UNITS, cosine, distance_score, target_lost
from .evaluate import Embedded, Evaluator


@dataclass
class Measured:
    """One masked prompt, scored."""

    call: Call  # what was asked and paid for (an embedding's tokens and cost included)
    score: float
    extra: dict = field(default_factory=dict)  # Evaluation fields only this scorer fills (target_logprob, cosine)
    point: object = None  # the answer in the scorer's terms, for the noise floor


def add_cost(call: Call, cost: float | None) -> None:
    """Add a further request's cost to a call's; an unknown cost makes the total unknown."""
    if call.cost_usd is not None:
        call.cost_usd = None if cost is None else call.cost_usd + cost


class Scorer:
    """The strategy a run scores with. Subclasses set the class attributes and the methods below."""

    name: ClassVar[str]
    unit: ClassVar[str]  # recorded with the run as its score_unit
    min_effect: ClassVar[float]  # the noise floor's lowest value, in `unit`, unless the config gives one
    needs_generation: ClassVar[bool] = True  # prompts with spans deleted are answered (not only scored)
    scores_baseline: ClassVar[bool] = False  # `prepare` makes one more model call (counted in the projection)

    def __init__(self) -> None:
        self.baseline: Call | None = None
        self.target: Target | None = None
        self.answer_range = (0, 0)  # the characters of the baseline answer that are scored
        self.answer_tokens: AnswerTokens | None = None  # kept by scorers that score tokens (see prepare)

    async def prepare(self, evaluator: Evaluator, messages: list[dict], baseline: Call, target: Target | None) -> None:
        """Keep what later scores compare against; a request made here adds its cost to `baseline`."""
        self.baseline, self.target = baseline, target
        self.answer_range = (target.start, target.end) if target else (0, len(baseline.output))

    async def measure(self, evaluator: Evaluator, messages: list[dict], repeat: int = 0) -> Measured:
        """Score these messages (the prompt with spans deleted) against the baseline."""
        call = await evaluator.complete(messages, repeat=repeat)
        return await self.score_answer(evaluator, call)

    async def score_answer(self, evaluator: Evaluator, call: Call) -> Measured:
        """Score a generated answer (scorers that generate)."""
        raise NotImplementedError

    def baseline_point(self) -> object:
        """The baseline answer itself, in the scorer's terms: the first of the noise floor's points."""
        raise NotImplementedError

    async def stored_point(self, evaluator: Evaluator, e: Evaluation) -> object:
        """What a stored repeated baseline answered, in the scorer's terms (as `measure` gives it)."""
        raise NotImplementedError

    def distance(self, a: object, b: object) -> float:
        """The score between two answers to the same prompt (noise, since nothing was deleted)."""
        raise NotImplementedError


class LogprobScorer(Scorer):
    """The drop in the baseline answer's (or target's) mean log-probability per token.

    Every answer token's log-probability is kept with each score (TokenValues), so any
    other part of the answer can be scored later from the same calls (stages/retarget.py).
    """

    name = "logprob"
    unit, min_effect = UNITS[name].unit, UNITS[name].min_effect
    needs_generation = False
    scores_baseline = True

    async def prepare(self, evaluator, messages, baseline, target) -> None:
        await super().prepare(evaluator, messages, baseline, target)
        call, scored = await evaluator.logprob(messages, baseline.output)
        self.value = scored.mean_over(*self.answer_range)
        if self.value is None:
            raise UsageError(
                "the baseline answer is empty, so the log-probability scorer has nothing to score: "
                "check the prompt and --max-tokens, or use --scorer embedding"
            )
        self.answer_tokens = AnswerTokens(offsets=scored.offsets, length=scored.length,
                                          baseline=token_values(scored.logprobs))
        add_cost(baseline, call.cost_usd)

    async def measure(self, evaluator, messages, repeat=0) -> Measured:
        call, scored = await evaluator.logprob(messages, self.baseline.output, repeat=repeat)
        value = scored.mean_over(*self.answer_range)
        if value is None:
            raise BackendError("the server returned no log-probabilities for the answer's tokens")
        own = None if scored.offsets == self.answer_tokens.offsets else scored.offsets
        tokens = token_values(scored.logprobs, own)
        return Measured(call, self.value - value, {"target_logprob": value, "tokens": tokens}, value)

    def baseline_point(self):
        return self.value

    async def stored_point(self, evaluator, e):
        return e.target_logprob

    def distance(self, a, b) -> float:
        return abs(a - b)


class EmbeddingScorer(Scorer):
    """The embedding distance between the answer and the baseline answer."""

    name = "embedding"
    unit, min_effect = UNITS[name].unit, UNITS[name].min_effect

    async def prepare(self, evaluator, messages, baseline, target) -> None:
        await super().prepare(evaluator, messages, baseline, target)
        self.vector: Embedded = await evaluator.embed(baseline.output)
        baseline.embed_tokens = self.vector.tokens
        add_cost(baseline, self.vector.cost_usd)

    async def score_answer(self, evaluator, call) -> Measured:
        if call.output == self.baseline.output:
            # identical answer: distance 0, no embedding needed
            return Measured(call, 0.0, {"cosine": 1.0}, self.vector.vector)
        embed = await evaluator.embed(call.output)
        cos = cosine(self.vector.vector, embed.vector)
        call.embed_tokens = embed.tokens
        add_cost(call, embed.cost_usd)
        return Measured(call, distance_score(cos), {"cosine": cos}, embed.vector)

    def baseline_point(self):
        return self.vector.vector

    async def stored_point(self, evaluator, e):
        if e.output is None:
            return e.output
        if e.output == self.baseline.output:
            return self.vector.vector
        return (await evaluator.embed(e.output)).vector

    def distance(self, a, b) -> float:
        return distance_score(cosine(a, b))


class TargetOverlapScorer(Scorer):
    """The share of the target's words lost from the answer (black-box APIs with a target)."""

    name = "target_overlap"
    unit, min_effect = UNITS[name].unit, UNITS[name].min_effect

    async def score_answer(self, evaluator, call) -> Measured:
        return Measured(call, target_lost(self.target.text, call.output), {}, call.output)

    def baseline_point(self):
        return self.baseline.output

    async def stored_point(self, evaluator, e):
        return e.output

    def distance(self, a, b) -> float:
        target = self.target.text
        return abs(target_lost(target, a) - target_lost(target, b))


def token_values(logprobs: list[float], offsets: list[int] | None = None) -> TokenValues:
    """Per-token log-probabilities as stored: float32 (7 significant digits, far below any noise floor)."""
    return TokenValues(count=len(logprobs), offsets=offsets, values=np.asarray(logprobs, dtype="<f4").tobytes())


SCORERS: dict[str, type[Scorer]] = {s.name: s for s in (LogprobScorer, EmbeddingScorer, TargetOverlapScorer)}


def scorer_named(name: str) -> Scorer:
    """A new scorer object of this name (a stored run's scorer)."""
    if name not in SCORERS:
        raise UsageError(f"scorer {name!r} is not one this version of prompt_attr has ({', '.join(SCORERS)})")
    return SCORERS[name]()


async def choose_scorer(config: AttributionConfig, backend: Backend, probe=None) -> Scorer:
    """The scorer a run uses: log-probabilities where the backend offers them (see score.py).

    `probe`: the run's evaluator's `logprob`, so a backend that asks its server
    whether it offers log-probabilities makes that billed request within the budget.
    """
    # No probe when the embedding scorer is asked for: a flaky probe must not stop such a run.
    can = config.scorer != "embedding" and isinstance(backend, LogprobBackend) and await _offers_logprob(backend, probe)
    if config.scorer == "logprob" and not can:
        info = backend.info
        raise UsageError(
            f"{info.model} ({info.backend}) cannot score a given answer's log-probability: "
            "use --scorer embedding, or auto to pick what the backend offers"
        )
    if config.scorer == "logprob" or (config.scorer == "auto" and can):
        return LogprobScorer()
    return TargetOverlapScorer() if config.target is not None else EmbeddingScorer()


async def resumed_scorer(name: str, config: AttributionConfig, backend: Backend, probe=None) -> Scorer:
    """A stopped run's scorer, for resuming it: the log-probability scorer only if still offered."""
    if name == LogprobScorer.name:
        return await choose_scorer(config.model_copy(update={"scorer": "logprob"}), backend, probe)
    return scorer_named(name)


async def _offers_logprob(backend: LogprobBackend, probe) -> bool:
    """backend.supports_logprob(), its probe made through `probe` where the backend takes one."""
    if probe is not None and "probe" in inspect.signature(backend.supports_logprob).parameters:
        return await backend.supports_logprob(probe=probe)
    return await backend.supports_logprob()

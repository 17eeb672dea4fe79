"""Scorer strategies: each one's unit and rules, the choice between them, and a new one plugged in."""

from __future__ import annotations

import asyncio

import pytest

import prompt_attr
from prompt_attr import Price, UsageError
from prompt_attr_widget.backends.base import GenerationParams
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.config import AttributionConfig
from prompt_attr_widget.core.schema import Evaluation, Target
from prompt_attr_widget.engine import run as engine
from prompt_attr_widget.engine.budget import Budget
from prompt_attr_widget.engine.cache import CallCache
from prompt_attr_widget.engine.evaluate import Evaluator
from prompt_attr_widget.engine.plan import messages_for
from prompt_attr_widget.engine.scorers import (
    SCORERS,
    EmbeddingScorer,
    LogprobScorer,
    Measured,
    Scorer,
    TargetOverlapScorer,
    choose_scorer,
    resumed_scorer,
    scorer_named,
)

PROMPT = "It was late. The Blue Falcon landed safely. It rained all day. My cat slept."


def evaluator(backend) -> Evaluator:
    return Evaluator(backend, CallCache(None), Budget(None), GenerationParams(), concurrency=4, rpm=None)


def config(**options) -> AttributionConfig:
    return AttributionConfig.build(model="fake", **options)


# --- each strategy's rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "unit", "min_effect", "generates", "scores_baseline"),
    [
        (LogprobScorer, "logprob", "log-prob drop (nats/token)", 0.1, False, True),
        (EmbeddingScorer, "embedding", "embedding distance (0-1)", 0.05, True, False),
        (TargetOverlapScorer, "target_overlap", "share of target lost (0-1)", 0.2, True, False),
    ],
)
def test_each_scorer_states_its_unit_minimum_effect_and_calls(cls, name, unit, min_effect, generates, scores_baseline):
    scorer = cls()
    assert scorer.name == name and SCORERS[name] is cls
    assert scorer.unit == unit
    assert scorer.min_effect == min_effect
    assert scorer.needs_generation is generates
    assert scorer.scores_baseline is scores_baseline
    assert isinstance(scorer_named(name), cls) and scorer_named(name) is not scorer_named(name)


def test_an_unknown_stored_scorer_is_a_usage_error():
    with pytest.raises(UsageError, match="not one this version"):
        scorer_named("telepathy")


def test_logprob_scorer_scores_the_baseline_once_and_generates_nothing():
    backend = FakeBackend(logprobs=True, price=Price(input=1000, output=1000))
    ev = evaluator(backend)
    messages = messages_for(PROMPT, None)
    baseline = asyncio.run(ev.complete(messages))
    scorer = LogprobScorer()
    paid_for_answer = baseline.cost_usd

    async def go():
        await scorer.prepare(ev, messages, baseline, None)
        return await scorer.measure(ev, messages_for("It was late. It rained all day.", None))

    m = asyncio.run(go())
    assert backend.logprob_calls == 2 and backend.calls == 1  # the baseline's answer, and no answer since
    assert baseline.cost_usd > paid_for_answer  # the baseline's scoring call is added to its cost
    assert m.call.output is None and m.point == m.extra["target_logprob"]
    assert m.score == pytest.approx(scorer.baseline_point() - m.extra["target_logprob"]) and m.score > 0
    assert scorer.distance(0.5, 0.25) == 0.25


def test_embedding_scorer_embeds_the_baseline_and_skips_identical_answers():
    backend = FakeBackend()
    ev = evaluator(backend)
    messages = messages_for(PROMPT, None)

    async def go():
        baseline = await ev.complete(messages)
        scorer = EmbeddingScorer()
        await scorer.prepare(ev, messages, baseline, None)
        same = await scorer.measure(ev, messages_for(PROMPT + " It was dark.", None))
        other = await scorer.measure(ev, messages_for("It was late. It rained all day.", None))
        return baseline, scorer, same, other

    baseline, scorer, same, other = asyncio.run(go())
    assert baseline.embed_tokens > 0 and backend.embed_calls == 2  # the baseline's, and the one different answer's
    assert (same.score, same.extra) == (0.0, {"cosine": 1.0}) and same.point == scorer.baseline_point()
    assert other.score == pytest.approx(1 - other.extra["cosine"]) and other.call.embed_tokens > 0
    assert scorer.distance(scorer.baseline_point(), scorer.baseline_point()) == 0.0


def test_target_overlap_scorer_prepares_nothing_and_scores_the_target_words():
    backend = FakeBackend()
    ev = evaluator(backend)
    messages = messages_for(PROMPT, None)

    async def go():
        baseline = await ev.complete(messages)
        target = Target(text="Falcon", start=baseline.output.index("Falcon"), end=baseline.output.index("Falcon") + 6)
        scorer = TargetOverlapScorer()
        await scorer.prepare(ev, messages, baseline, target)
        lost = await scorer.measure(ev, messages_for("It was late. It rained all day.", None))
        kept = await scorer.measure(ev, messages_for("The Blue Falcon landed safely.", None))
        noise = Evaluation(**kept.call.model_dump(), id=0, round=-1, dropped=[], score=0.0, purpose="noise")
        return scorer, lost, kept, await scorer.stored_point(ev, noise)

    scorer, lost, kept, point = asyncio.run(go())
    assert backend.calls == 3 and backend.embed_calls == 0
    assert (lost.score, kept.score) == (1.0, 0.0) and lost.extra == {}
    assert point == kept.call.output and scorer.distance(lost.point, kept.point) == 1.0


# --- the choice ----------------------------------------------------------------------------


class NoProbe(FakeBackend):
    """A backend whose log-probability probe must not be asked."""

    async def supports_logprob(self):
        raise AssertionError("probed")


@pytest.mark.parametrize(
    ("options", "logprobs", "chosen"),
    [
        ({}, True, "logprob"),
        ({}, False, "embedding"),
        ({"target": "Falcon"}, False, "target_overlap"),
        ({"target": "Falcon"}, True, "logprob"),
        ({"scorer": "logprob"}, True, "logprob"),
        ({"scorer": "embedding"}, True, "embedding"),
        ({"scorer": "embedding", "target": "Falcon"}, True, "target_overlap"),
    ],
)
def test_choose_scorer_picks_as_before(options, logprobs, chosen):
    scorer = asyncio.run(choose_scorer(config(**options), FakeBackend(logprobs=logprobs)))
    assert isinstance(scorer, Scorer) and scorer.name == chosen


def test_the_embedding_scorer_asked_for_never_probes():
    assert asyncio.run(choose_scorer(config(scorer="embedding"), NoProbe())).name == "embedding"


def test_logprob_asked_of_a_backend_without_it_is_refused():
    with pytest.raises(UsageError, match="cannot score a given answer's log-probability"):
        asyncio.run(choose_scorer(config(scorer="logprob"), FakeBackend(logprobs=False)))


def test_a_resumed_run_keeps_its_scorer_and_logprob_is_checked_again():
    assert asyncio.run(resumed_scorer("target_overlap", config(), FakeBackend(logprobs=True))).name == "target_overlap"
    assert asyncio.run(resumed_scorer("logprob", config(), FakeBackend(logprobs=True))).name == "logprob"
    with pytest.raises(UsageError, match="cannot score"):
        asyncio.run(resumed_scorer("logprob", config(), FakeBackend(logprobs=False)))


# --- a new scorer is one class ---------------------------------------------------------------


class WordsLost(Scorer):
    """A scorer made up for the test: the share of the baseline answer's words missing from an answer."""

    name = "words_lost"
    unit = "share of baseline words lost (0-1)"
    min_effect = 0.15

    def lost(self, output: str) -> float:
        words = set(self.baseline.output.split())
        return len(words - set(output.split())) / len(words)

    async def score_answer(self, evaluator, call):
        return Measured(call, self.lost(call.output), {}, call.output)

    def baseline_point(self):
        return self.baseline.output

    async def stored_point(self, evaluator, e):
        return e.output

    def distance(self, a, b):
        return abs(self.lost(a) - self.lost(b))


@pytest.fixture
def words_lost(monkeypatch):
    """WordsLost chosen for every run, and known by name for resuming."""
    async def choose(config, backend, probe=None):
        return WordsLost()

    monkeypatch.setattr(engine, "choose_scorer", choose)
    monkeypatch.setitem(SCORERS, WordsLost.name, WordsLost)


def test_a_new_scorer_runs_end_to_end(runs_dir, words_lost):
    backend = FakeBackend()
    a = prompt_attr.attribute(PROMPT, backend=backend, runs_dir=runs_dir, method="loo", noise_repeats=3, cache=False)
    assert a.status == "finished"
    assert a.record.scorer == "words_lost" and a.record.score_unit == WordsLost.unit
    assert a.record.noise.min_effect == 0.15 and a.record.noise.samples == [0.0, 0.0, 0.0]
    assert backend.embed_calls == 0 and backend.logprob_calls == 0
    by_span = {s.index: s.score for s in a.record.attribution}
    assert by_span[1] == 1.0 and all(by_span[i] == 0.0 for i in (0, 2, 3))  # only "The Blue Falcon" is answered
    assert next(iter(a.record.ranked())).index == 1
    assert prompt_attr.load_run(a.run_id, runs_dir=runs_dir).record == a.record


def test_a_run_with_a_new_scorer_resumes_with_it(runs_dir, words_lost):
    seen = []

    def stop(event):
        seen.append(event)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=runs_dir, method="loo", on_event=stop)
    [stopped] = prompt_attr.list_runs(runs_dir)
    assert stopped.status == "aborted"
    done = prompt_attr.attribute(resume=stopped.run_id, backend=FakeBackend(), runs_dir=runs_dir)
    assert done.status == "finished" and done.record.scorer == "words_lost"
    assert {s.index: s.score for s in done.record.attribution}[1] == 1.0


def test_score_deletions_uses_the_chosen_scorer(words_lost):
    scores, scorer = asyncio.run(
        engine.score_deletions(PROMPT, [[1], [0, 2]], config(), FakeBackend(), cache=CallCache(None))
    )
    assert scorer == "words_lost" and scores == [1.0, 0.0]

"""A run stopped outside its event stream is ended by the live run: its estimate and its spend.

The store computes nothing: the closing events come from the engine's run
(`RunStream.closing_events`), so a stopped run's spend is the live tally
(earlier sessions of a resumed run included) and its attribution is the
engine's estimate of what was evaluated, answers not yet streamed included.
"""

from __future__ import annotations

import asyncio

import pytest

from prompt_attr import Price
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.config import AttributionConfig
from prompt_attr_widget.core.events import Estimate, Evaluated, RunAborted, RunFailed
from prompt_attr_widget.core.schema import Spend
from prompt_attr_widget.engine.cache import CallCache
from prompt_attr_widget.engine.run import RunStream
from prompt_attr_widget.stages.estimate import estimate
from prompt_attr_widget.stages.plan import random_masks
from prompt_attr_widget.store.runs import RunWriter, read_run

PROMPT = " ".join(
    ["It was late.", "The Blue Falcon landed.", "It rained all day.", "My cat slept.", "Zebras Graze Quietly.",
     "It was cold.", "Red Kites Circle.", "We went home."]
)
PRICE = dict(price=Price(input=1000, output=1000), embed_price=Price(input=100))
COUNTS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "embed_tokens")


def stopped_run(runs_dir, backend, stop_after, *, stored=None, end=True, status="aborted", **options):
    """Stream a run into the store and stop it after `stop_after` evaluations, as an interrupt would.

    Returns the stream, the closing events stored (None with end=False: killed, never closed)
    and the run as read back.
    """
    config = AttributionConfig.build(model="fake", **PRICE, **options)
    store = RunWriter(runs_dir)

    async def go():
        if stored is None:
            run_id = store.reserve()
        else:
            store.resume(stored)
            run_id = stored.run_id
        stream = RunStream(stored.prompt if stored else PROMPT, config, backend, cache=CallCache(None),
                           run_id=run_id, stored=stored)
        seen = 0
        async for event in stream.events():
            store.handle(event)
            seen += isinstance(event, Evaluated)
            if seen == stop_after:
                break
        await stream.aclose()
        closing = None
        if end:
            closing = store.end(stream.unreported, lambda: stream.closing_events(status, "stopped by the test"))
        store.release()
        return stream, closing, run_id

    stream, closing, run_id = asyncio.run(go())
    return stream, closing, read_run(run_id, runs_dir)


def engine_estimate(record):
    """What the engine's estimate function gives for a stored run's evaluations (surrogate: planned masks)."""
    c = record.config
    masks = random_masks(len(record.spans), c["masks"], c["keep_prob"], c["seed"]) if c["method"] == "surrogate" else None
    scores, fit = estimate(c["method"], len(record.spans), record.evaluations, record.noise, masks=masks,
                           keep_prob=c["keep_prob"], seed=c["seed"])
    return scores, fit


@pytest.mark.parametrize("logprobs", [False, True])
@pytest.mark.parametrize("latency", [0.0, 0.002])
def test_the_spend_of_a_stopped_run_is_the_live_tally(runs_dir, logprobs, latency):
    backend = FakeBackend(logprobs=logprobs, latency=latency, **PRICE)
    stream, closing, record = stopped_run(runs_dir, backend, 3, method="loo", concurrency=3)
    ending = closing[-1]
    assert isinstance(ending, RunAborted) and record.status == "aborted" and record.reason == "stopped by the test"
    live = stream.run.spend()
    assert ending.spend == live == record.spend
    assert live.calls == backend.calls + backend.embed_calls + backend.logprob_calls  # requests, as the tally counts
    assert live.usd > 0
    assert record.timings_ms["total_ms"] > 0  # the live run's timings, too


def test_a_stop_books_the_worst_case_of_calls_cut_off_in_flight(runs_dir):
    """A call cancelled mid-flight may have been billed: its worst case is in the stopped run's spend."""
    backend = FakeBackend(latency=0.05, **PRICE)
    stream, closing, record = stopped_run(runs_dir, backend, 1, method="loo", concurrency=4, faithfulness="off")
    stored = [record.baseline, *record.evaluations]
    assert backend.calls > len(stored)  # some calls were still out when the run stopped
    assert record.spend.calls == backend.calls + backend.embed_calls
    assert record.spend.usd > sum(c.cost_usd for c in stored)  # ... and their worst case is booked
    assert record.spend == stream.run.spend()  # nothing settles after the run was closed


@pytest.mark.parametrize("method", ["loo", "hierarchical", "surrogate"])
def test_the_estimate_of_a_stopped_run_is_the_engines(runs_dir, method):
    backend = FakeBackend()  # instant: when the stream stops, the rest of the batch is back, unreported
    stream, closing, record = stopped_run(runs_dir, backend, 2, method=method, masks=16, faithfulness="off",
                                          null_samples=0)  # stopped in the passes, not among the placebos
    [closing_estimate] = [e for e in closing if isinstance(e, Estimate)]
    attribution = [e for e in record.evaluations if e.purpose == "attribution"]
    assert len(attribution) > 2 and stream.unreported  # answers never streamed are estimated too
    assert sorted(e.id for e in record.evaluations) == list(range(len(record.evaluations)))
    scores, fit = engine_estimate(record)
    assert closing_estimate.attribution == scores == record.attribution and closing_estimate.surrogate == fit
    assert closing_estimate.round == max(e.round for e in attribution)
    assert closing_estimate.attribution


def test_a_run_stopped_before_any_attribution_gets_no_estimate(runs_dir):
    backend = FakeBackend()
    stream, closing, record = stopped_run(runs_dir, backend, 1, noise_repeats=3, concurrency=1, status="failed",
                                          null_samples=0)
    assert [type(e) for e in closing] == [Evaluated, RunFailed]  # the noise repeat that was back; no estimate
    assert record.status == "failed" and not record.attribution
    assert closing[-1].spend == stream.run.spend()


def test_a_resumed_run_stopped_again_counts_both_sessions(runs_dir):
    first_backend = FakeBackend(latency=0.002, **PRICE)
    _, _, first = stopped_run(runs_dir, first_backend, 2, method="loo", concurrency=2, faithfulness="off")
    second_backend = FakeBackend(latency=0.002, **PRICE)
    stream, closing, second = stopped_run(runs_dir, second_backend, 2, stored=first, method="loo", concurrency=2,
                                          faithfulness="off")
    assert second.run_id == first.run_id and second.status == "aborted"
    session = stream.run.evaluator.spend_snapshot()  # this session's own tally
    for k in COUNTS:
        assert getattr(second.spend, k) == getattr(first.spend, k) + getattr(session, k), k
    assert second.spend.usd > first.spend.usd  # the budget held the first session's dollars
    assert second.spend == stream.run.spend()
    assert second.spend.calls == sum(b.calls + b.embed_calls for b in (first_backend, second_backend))
    scores, _ = engine_estimate(second)
    assert second.attribution == scores and len(scores) >= len(first.attribution)


def test_a_run_killed_without_closing_replays_by_folding_its_events(runs_dir):
    """No closing events (a kill): read_run rebuilds the run from events.jsonl and computes nothing."""
    stream, closing, record = stopped_run(runs_dir, FakeBackend(), 2, method="loo", faithfulness="off", end=False)
    assert closing is None
    assert record.status == "aborted" and "rebuilt" in record.reason
    assert len(record.evaluations) == 2  # only what was streamed; the unreported answers were never stored
    assert record.attribution == [] and record.spend == Spend()  # no estimate and no spend were made up


def test_a_stream_stopped_before_its_run_was_made_ends_with_nothing_spent():
    config = AttributionConfig.build(model="fake")
    stream = RunStream(PROMPT, config, FakeBackend(), cache=CallCache(None), run_id="x")
    asyncio.run(stream.aclose())
    [ending] = stream.closing_events("aborted", "stopped")
    assert isinstance(ending, RunAborted) and ending.spend == Spend() and stream.run is None

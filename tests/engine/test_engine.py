"""The engine end to end with the fake backend: plans, cache, limits, budget, events, API."""

from __future__ import annotations

import asyncio
import json
import time

import pandas as pd
import pytest

import prompt_attr
from prompt_attr import BackendError, Price
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.events import (
    BaselineDone,
    Estimate,
    Evaluated,
    FaithfulnessMeasured,
    Progress,
    RunAborted,
    RunFailed,
    RunFinished,
    RunStarted,
)
from prompt_attr_widget.core.schema import RunRecord
from prompt_attr_widget.stages.plan import worst_case_groups
from prompt_attr_widget.stages.segment import segment

FILLER = ["cat", "dog", "fox", "owl"]


def planted(n: int, culprit: int) -> str:
    """n sentences; only the culprit has capitalised words the fake model repeats."""
    sentences = [f"It {FILLER[i % 4]} sat near wall number {i}." for i in range(n)]
    sentences[culprit] = "The Zebra Quartet Plays Loudly Tonight."
    return " ".join(sentences)


def attribute(prompt, runs_dir, backend=None, **kw):
    return prompt_attr.attribute(prompt, backend=backend or FakeBackend(), runs_dir=runs_dir, **kw)


def events_file(a) -> list[dict]:
    return [json.loads(line) for line in (a.path / "events.jsonl").read_text("utf-8").splitlines()]


class InFlight(FakeBackend):
    """Counts how many calls (completions and embeddings) run at once."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.now = self.peak = 0

    async def _track(self, coro):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await coro
        finally:
            self.now -= 1

    async def complete(self, messages, params):
        return await self._track(super().complete(messages, params))

    async def embed(self, texts):
        await asyncio.sleep(0.002)
        return await self._track(super().embed(texts))


# --- plans ------------------------------------------------------------------------------------


def test_loo_evaluates_every_span_once(runs_dir, fake):
    prompt = planted(12, 4)
    a = attribute(prompt, runs_dir, fake, method="loo", cache=False)
    n = len(segment(prompt))
    assert n == 12 == len(a.spans)
    attribution = [e for e in a.record.evaluations if e.purpose == "attribution"]
    placebo = [e for e in a.record.evaluations if e.purpose == "placebo"]
    assert len(attribution) == n and len(placebo) == 8 and len(a.record.evaluations) == n + 8
    assert sorted(tuple(e.dropped) for e in attribution) == [(i,) for i in range(n)]
    # plus the baseline and the placebos; the behavioural check reuses the deletions' own answers
    assert fake.calls == n + 1 + 8
    assert [e.id for e in a.record.evaluations] == list(range(n + 8))
    assert all(s.resolved for s in a.spans)
    assert a.top(1)[0].index == 4 and a.top(1)[0].score == 1.0
    assert all(s.score == 0.0 for s in a.spans if s.index != 4)


def test_identical_answers_need_no_embedding(runs_dir, fake):
    a = attribute(planted(6, 2), runs_dir, fake, method="loo", cache=False)
    assert fake.embed_calls == 2  # the baseline and the one answer that changed
    unchanged = [e for e in a.record.evaluations if e.dropped != [2]]
    assert all(e.score == 0.0 and e.cosine == 1.0 and e.embed_tokens == 0 for e in unchanged)


def test_hierarchical_finds_the_loo_culprit_with_fewer_calls(runs_dir):
    prompt = planted(64, 37)
    loo = attribute(prompt, runs_dir, method="loo", cache=False)
    started = []
    hier = attribute(prompt, runs_dir, cache=False, on_event=lambda e: started.append(e) if isinstance(e, RunStarted) else None)
    assert len(hier.spans) == len(loo.spans) == 64
    assert loo.top(1)[0].index == hier.top(1)[0].index == 37
    assert hier.top(1)[0].resolved and hier.top(1)[0].score == pytest.approx(loo.top(1)[0].score)
    def attribution(run):
        return [e for e in run.record.evaluations if e.purpose == "attribution"]

    assert len(attribution(hier)) < len(attribution(loo)) // 3
    assert any(not s.resolved for s in hier.spans)
    assert max(e.round for e in hier.record.evaluations) >= 1
    spans = segment(prompt)
    # + 8 placebos, 3 behavioural checks, top-k and 2 random deletions
    assert started[0].planned == worst_case_groups(64, spans, prompt, 0.2) + 8 + 3 + 3
    assert len(hier.record.evaluations) <= started[0].planned


def test_small_prompts_go_straight_to_loo(runs_dir):
    a = attribute(planted(10, 3), runs_dir, cache=False)  # hierarchical by default
    attribution = [e for e in a.record.evaluations if e.purpose == "attribution"]
    assert len(attribution) == 10
    assert all(len(e.dropped) == 1 and e.round == 0 for e in attribution)


def test_runs_are_deterministic(runs_dir):
    prompt = planted(30, 11)
    a = attribute(prompt, runs_dir, cache=False)
    b = attribute(prompt, runs_dir, cache=False)
    assert a.record.attribution == b.record.attribution
    assert a.record.prompt_sha256 == b.record.prompt_sha256


@pytest.mark.timeout(30)
def test_a_culprit_inside_a_dominant_span_terminates(runs_dir):
    # One huge span and many small ones: refinement must still end (see plan.split).
    prompt = "It " + "x" * 3000 + " Big Giant Words. " + " ".join(f"It is {i}." for i in range(30))
    a = attribute(prompt, runs_dir, cache=False)
    assert a.status == "finished"
    assert a.top(1)[0].index == 0


# --- cache -------------------------------------------------------------------------------------


def test_second_identical_run_is_served_from_the_cache(runs_dir):
    price = Price(input=1.0, output=2.0)
    prompt = planted(20, 7)
    first_backend = FakeBackend(price=price, embed_price=Price(input=0.5))
    first = attribute(prompt, runs_dir, first_backend)
    assert first.record.spend.calls > 0 and first.record.spend.usd > 0
    again = FakeBackend(price=price, embed_price=Price(input=0.5))
    second = attribute(prompt, runs_dir, again)
    assert again.calls == 0 and again.embed_calls == 0
    assert second.record.spend.calls == 0
    assert second.record.spend.usd == 0.0
    assert second.record.baseline.cache_hit
    assert second.record.evaluations and all(e.cache_hit for e in second.record.evaluations)
    assert second.record.spend.cache_hits >= len(second.record.evaluations) + 1
    assert second.record.attribution == first.record.attribution
    # cache=False calls the model again
    third_backend = FakeBackend(price=price, embed_price=Price(input=0.5))
    third = attribute(prompt, runs_dir, third_backend, cache=False)
    assert third_backend.calls == len(third.record.evaluations) + 1
    assert third.record.spend.calls == third_backend.calls + third_backend.embed_calls
    assert not any(e.cache_hit for e in third.record.evaluations)


def test_cache_key_depends_on_generation_parameters(runs_dir):
    prompt = planted(5, 1)
    attribute(prompt, runs_dir)
    other = FakeBackend()
    attribute(prompt, runs_dir, other, max_tokens=3)
    assert other.calls > 0
    system = FakeBackend()
    attribute(prompt, runs_dir, system, system="Answer Tersely")
    assert system.calls > 0


# --- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3, 7])
def test_concurrency_cap(runs_dir, concurrency):
    backend = InFlight(latency=0.003)
    attribute(planted(24, 5), runs_dir, backend, method="loo", cache=False, concurrency=concurrency)
    assert backend.peak == concurrency  # reached, never passed


def test_rpm_limiter_is_used_and_does_not_deadlock(runs_dir, monkeypatch):
    from aiolimiter import AsyncLimiter

    acquired = []
    original = AsyncLimiter.acquire

    async def counting(self, amount=1):
        acquired.append((self.max_rate, self.time_period))
        return await original(self, amount)

    monkeypatch.setattr(AsyncLimiter, "acquire", counting)
    t = time.perf_counter()
    a = attribute(planted(6, 2), runs_dir, method="loo", cache=False, rpm=600, concurrency=4)
    assert a.status == "finished"
    assert time.perf_counter() - t < 10
    assert len(acquired) == a.record.spend.calls > 0
    assert set(acquired) == {(600, 60)}
    acquired.clear()
    attribute(planted(6, 2), runs_dir, method="loo", cache=False)
    assert acquired == []  # no rpm, no limiter


# --- budget ------------------------------------------------------------------------------------


def projection(prompt, runs_dir, backend_factory, **kw) -> float:
    with pytest.raises(prompt_attr.BudgetRefused) as info:
        attribute(prompt, runs_dir, backend_factory(), budget=0, **kw)
    return info.value.projected_usd


@pytest.mark.parametrize("concurrency", [1, 20])
def test_budget_stops_mid_run_with_everything_saved(runs_dir, concurrency):
    prompt = planted(40, 9)

    def make():
        return FakeBackend(price=Price(input=1.0, output=0.0), embed_price=Price(input=0.0), latency=0.002)

    # no behavioural checks: the projection counts them, this run would not need them
    options = dict(method="loo", cache=False, max_tokens=8, concurrency=concurrency, faithfulness="off",
                   behaviour_checks=0)
    budget = projection(prompt, runs_dir, make, **options)
    backend = make()
    seen = []
    a = attribute(prompt, runs_dir, backend, budget=budget, on_event=seen.append, **options)
    assert a.status == "aborted"
    assert "budget" in a.record.reason
    assert a.record.spend.usd <= budget
    saved = a.record.evaluations
    assert 0 < len([e for e in saved if e.purpose == "attribution"]) < 40
    # every paid call is counted; at most one answer per slot can be left
    # without the embedding that would have scored it (it stays in the cache)
    assert a.record.spend.calls == backend.calls + backend.embed_calls
    assert len(saved) + 1 <= backend.calls <= len(saved) + 1 + concurrency
    paid = a.record.baseline.cost_usd + sum(e.cost_usd for e in saved)
    assert paid <= a.record.spend.usd + 1e-12
    lines = events_file(a)
    assert [line["evaluation"] for line in lines if line["type"] == "evaluated"] == [
        e.model_dump(mode="json") for e in saved
    ]
    assert lines[-1]["type"] == "run_aborted" and isinstance(seen[-1], RunAborted)
    # what was evaluated is attributed, not left as an empty heat-map
    assert lines[-2]["type"] == "estimate"
    assert sum(s.resolved for s in a.spans) == len([e for e in saved if e.purpose == "attribution"])
    assert prompt_attr.load_run(a.run_id, runs_dir=runs_dir) == a


def test_budget_refusal_creates_no_run(runs_dir):
    backend = FakeBackend(price=Price(input=10, output=30))
    with pytest.raises(prompt_attr.BudgetRefused):
        attribute(planted(8, 1), runs_dir, backend, budget=1e-6)
    assert backend.calls == 0
    assert prompt_attr.list_runs(runs_dir) == []


# --- events ------------------------------------------------------------------------------------


def test_event_order_for_a_finished_run(runs_dir):
    seen = []
    a = attribute(planted(30, 3), runs_dir, on_event=seen.append, cache=False)
    kinds = [type(e) for e in seen]
    assert kinds[0] is RunStarted and kinds[1] is BaselineDone and kinds[-1] is RunFinished
    assert sum(k in (RunFinished, RunAborted, RunFailed) for k in kinds) == 1
    assert kinds.count(Evaluated) == len(a.record.evaluations)
    assert kinds[-2] is FaithfulnessMeasured
    assert Estimate in kinds[kinds.index(Evaluated) : kinds.index(FaithfulnessMeasured)]
    progress = [e for e in seen if isinstance(e, Progress)]
    assert [p.done for p in progress] == list(range(1, len(progress) + 1))
    assert all(p.done <= p.planned for p in progress)
    stored = [line["type"] for line in events_file(a)]
    spend = ("call_reserved", "call_settled")  # the run store's journal of each billed call, not streamed
    assert [t for t in stored if t not in spend] == [e.type for e in seen if not isinstance(e, Progress)]
    assert stored.count("call_reserved") == stored.count("call_settled") == a.record.spend.calls


def test_event_sinks_accept_a_list(runs_dir):
    one, two = [], []
    attribute(planted(4, 1), runs_dir, on_event=[one.append, two.append])
    assert one == two and isinstance(one[0], RunStarted)


def test_a_backend_error_mid_run_fails_the_run_and_keeps_results(runs_dir):
    class Flaky(FakeBackend):
        async def complete(self, messages, params):
            if self.calls >= 4:
                raise BackendError("the server went away")
            return await super().complete(messages, params)

    seen = []
    a = attribute(planted(12, 2), runs_dir, Flaky(), method="loo", cache=False, concurrency=1, on_event=seen.append)
    assert a.status == "failed" and a.record.reason == "the server went away"
    assert len(a.record.evaluations) == 3
    assert isinstance(seen[0], RunStarted) and isinstance(seen[-1], RunFailed)
    assert events_file(a)[-1]["type"] == "run_failed"


def test_an_unexpected_exception_is_raised_and_the_run_saved_as_failed(runs_dir):
    class Broken(FakeBackend):
        async def embed(self, texts):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        attribute(planted(5, 1), runs_dir, Broken())
    loaded = prompt_attr.load_run("latest", runs_dir=runs_dir)
    assert loaded.status == "failed" and "RuntimeError: boom" in loaded.record.reason


# --- the Attribution object --------------------------------------------------------------------------


@pytest.fixture
def result(runs_dir):
    return attribute(planted(8, 5), runs_dir, method="loo")


def test_top(result):
    top = result.top(3)
    assert [s.index for s in top] == [5, 0, 1]  # ties broken by position
    assert top[0].text == "The Zebra Quartet Plays Loudly Tonight."
    assert top[0].ablated_output == "(nothing)"
    assert result.top()[0] == top[0] and len(result.top()) == 5
    assert len(result.top(100)) == 8


def test_to_records(result):
    records = result.to_records()
    assert len(records) == 8
    assert set(records[0]) == {
        "index", "start", "end", "text", "score", "resolved", "ablated_output", "stderr", "significant",
        "behaviour", "verdict", "drives"
    }
    for r in records:
        assert result.record.prompt[r["start"] : r["end"]] == r["text"]
    assert records[5]["score"] == 1.0


def test_to_json_round_trips(result):
    data = json.loads(result.to_json())
    assert data["run_id"] == result.run_id and data["status"] == "finished"
    assert RunRecord.model_validate(data) == result.record
    assert RunRecord.model_validate_json(result.to_json()) == result.record


def test_to_dataframe(result):
    df = result.to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert df.index.name == "index" and list(df.index) == list(range(8))
    assert df.loc[5, "score"] == 1.0
    assert df["score"].idxmax() == 5
    assert list(df.columns) == ["start", "end", "text", "score", "resolved", "ablated_output", "stderr", "significant",
                                "behaviour", "verdict", "drives"]


def test_repr_and_html(result):
    text = repr(result)
    assert "0x" not in text and " at " not in text
    assert result.run_id in text and "finished" in text and "8 spans" in text and "top span 5" in text
    html = result._repr_html_()
    assert html.startswith("<div") and result.run_id in html
    assert result.status == "finished" and result.baseline == "The Zebra Quartet Plays Loudly Tonight"
    assert result.spend_usd == 0.0 and result.path.name == result.run_id


def test_system_message_changes_the_prompt_hash(runs_dir):
    prompt = planted(6, 2)
    plain = attribute(prompt, runs_dir)
    again = attribute(prompt, runs_dir)
    terse = attribute(prompt, runs_dir, system="be brief")
    other = attribute(prompt, runs_dir, system="be verbose")
    assert plain.record.prompt_sha256 == again.record.prompt_sha256
    assert len({plain.record.prompt_sha256, terse.record.prompt_sha256, other.record.prompt_sha256}) == 3
    assert terse.record.system == "be brief"
    # the system message really reaches the model
    loud = attribute(prompt, runs_dir, system="Always Mention Penguins")
    assert loud.baseline.startswith("Always Mention Penguins")


# --- async, cancellation and running inside an event loop ----------------------------------------


def test_cancelling_attribute_async_saves_an_aborted_run(runs_dir):
    async def scenario():
        seen = []
        task = asyncio.create_task(
            prompt_attr.attribute_async(
                planted(30, 4),
                backend=FakeBackend(latency=0.01),
                runs_dir=runs_dir,
                method="loo",
                cache=False,
                concurrency=2,
                on_event=lambda e: seen.append(e) if isinstance(e, Evaluated) else None,
            )
        )
        while len(seen) < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    seen = asyncio.run(scenario())
    a = prompt_attr.load_run("latest", runs_dir=runs_dir)
    assert a.status == "aborted" and "interrupted" in a.record.reason
    assert 3 <= len(a.record.evaluations) < 30
    lines = events_file(a)
    assert lines[0]["type"] == "run_started" and lines[-1]["type"] == "run_aborted"
    stored = [line["evaluation"] for line in lines if line["type"] == "evaluated"]
    assert stored == [e.evaluation.model_dump(mode="json") for e in seen]
    assert json.loads((a.path / "run.json").read_text("utf-8"))["status"] == "aborted"


def test_attribute_works_inside_a_running_event_loop(runs_dir):
    async def notebook_cell():
        return attribute(planted(5, 3), runs_dir, method="loo")

    a = asyncio.run(notebook_cell())
    assert a.status == "finished" and a.top(1)[0].index == 3


def test_attribute_async(runs_dir):
    a = asyncio.run(prompt_attr.attribute_async(planted(5, 0), backend=FakeBackend(), runs_dir=runs_dir))
    assert a.status == "finished" and a.top(1)[0].index == 0

"""Interrupts at random points lose nothing, and a stopped run resumes without paying twice.

The property test stops runs on the fake backend in four ways a user can
(cancelling the task, as the widget's Stop button does; a real SIGINT, as
Ctrl-C does under asyncio.run; a KeyboardInterrupt raised while a sink
handles an event, as Ctrl-C does in a notebook's main thread), at a random
moment, with random methods, scorers and concurrency. After each stop the
run must be `aborted`, its events.jsonl must parse line by line, and every
evaluation the engine finished must be on disk. Then the run is resumed and
must end with the same attribution as a run that was never stopped,
without asking the model again for anything already stored.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import Counter

import pytest

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli
from prompt_attr_widget.core.events import EVENT_ADAPTER, Evaluated, RunStarted
from prompt_attr_widget.engine import run as engine
from prompt_attr_widget.store.runs import read_run, run_ids

TRIALS = 60
WORDS = ["It", "Alpha", "beta", "Gamma", "delta", "Epsilon", "zeta", "Theta", "iota", "Kappa"]
MODES = ("cancel_after_delay", "cancel_at_event", "sigint_at_event", "interrupt_in_sink")


class CountingBackend(FakeBackend):
    """A fake backend with random latency that remembers every prompt it was asked about."""

    def __init__(self, rng: random.Random, **kw):
        super().__init__(**kw)
        self.rng = rng
        self.asked: list[tuple[str, str]] = []

    async def complete(self, messages, params):
        self.asked.append(("complete", messages[-1]["content"]))
        await asyncio.sleep(self.rng.uniform(0, 0.003))
        return await super().complete(messages, params)

    async def logprob(self, messages, continuation):
        self.asked.append(("logprob", messages[-1]["content"]))
        await asyncio.sleep(self.rng.uniform(0, 0.003))
        return await super().logprob(messages, continuation)


def random_case(rng: random.Random) -> tuple[str, dict]:
    sentences = rng.randint(4, 24)
    prompt = " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) + "." for _ in range(sentences))
    options = dict(
        method=rng.choice(["loo", "hierarchical", "surrogate"]),
        masks=rng.choice([8, 16, 24]),
        concurrency=rng.randint(1, 8),
        faithfulness=rng.choice(["off", "cheap", "full"]),
        noise_repeats=rng.choice([1, 1, 3]),
    )
    return prompt, options


@pytest.fixture
def finished_measures(monkeypatch):
    """Every evaluation whose measurement completed inside the engine (paid for and scored)."""
    seen: list = []
    original = engine._Run.measure

    async def measure(self, *args, **kwargs):
        evaluation = await original(self, *args, **kwargs)
        seen.append(evaluation)
        return evaluation

    monkeypatch.setattr(engine._Run, "measure", measure)
    return seen


def interrupted_run(prompt, options, backend, runs_dir, mode, rng):
    """Start a run and stop it the given way; returns the exception that ended it (or None)."""
    stop_at = rng.randint(1, 40)
    seen = {"events": 0}

    async def main():
        task = None

        def sink(event):
            seen["events"] += 1
            if seen["events"] != stop_at:
                return
            if mode == "cancel_at_event":
                task.cancel()
            elif mode == "sigint_at_event":
                signal.raise_signal(signal.SIGINT)  # asyncio.run turns it into cancelling the run
            elif mode == "interrupt_in_sink":
                raise KeyboardInterrupt

        task = asyncio.ensure_future(
            prompt_attr.attribute_async(prompt, backend=backend, runs_dir=runs_dir, on_event=sink, **options)
        )
        if mode == "cancel_after_delay":
            await asyncio.sleep(rng.uniform(0, 0.05))
            task.cancel()
        return await task

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        return exc
    return None


def assert_events_parse(path):
    lines = (path / "events.jsonl").read_text("utf-8").splitlines()
    events = [EVENT_ADAPTER.validate_json(line) for line in lines]  # every line, none torn
    assert isinstance(events[0], RunStarted)
    return events


def key(e):
    return (tuple(e.dropped), e.purpose, e.repeat)


def test_interrupts_at_random_points_lose_nothing_and_resume_finishes(tmp_path, finished_measures, monkeypatch):
    rng = random.Random(20261123)
    outcomes = dict.fromkeys(MODES, 0)
    resumed = 0
    for trial in range(TRIALS):
        prompt, options = random_case(rng)
        logprobs = rng.random() < 0.5
        mode = MODES[trial % len(MODES)]
        runs_dir = tmp_path / f"t{trial}"
        monkeypatch.setenv("PROMPT_ATTR_CACHE_DIR", str(tmp_path / f"cache{trial}"))
        finished_measures.clear()
        stopped = interrupted_run(prompt, options, CountingBackend(rng, logprobs=logprobs), runs_dir, mode, rng)
        ids = run_ids(runs_dir)
        if stopped is None or not ids:
            # finished before the stop came, or stopped before the run began (then nothing is left behind)
            assert stopped is None or not runs_dir.exists() or not any(runs_dir.iterdir())
            continue
        [run_id] = ids
        record = read_run(run_id, runs_dir)
        if record.status == "finished":
            continue  # the stop came with the last event: the run was already complete
        outcomes[mode] += 1
        assert record.status == "aborted", (trial, mode, record.reason)
        events = assert_events_parse(runs_dir / run_id)
        stored = {key(e) for e in record.evaluations}
        assert len(stored) == len(record.evaluations), "an evaluation was stored twice"
        assert {key(e) for e in finished_measures} <= stored, (trial, mode)
        assert sorted(e.id for e in record.evaluations) == list(range(len(record.evaluations)))
        streamed = [ev.evaluation for ev in events if isinstance(ev, Evaluated)]
        assert len(streamed) == len(record.evaluations)

        # resume without the cache: nothing stored may be asked again
        fresh = CountingBackend(rng, logprobs=logprobs)
        done = prompt_attr.attribute(resume=run_id, backend=fresh, runs_dir=runs_dir, cache=False)
        assert done.status == "finished", done.record.reason
        assert done.run_id == run_id and done.record.resumed_at
        final = read_run(run_id, runs_dir)
        # every call the resume made is one of the evaluations it added (noise repeats share
        # the prompt, so calls are counted per prompt), but for the baseline's own scoring call
        stored, added = calls_of(final, record.evaluations), calls_of(final, final.evaluations)
        added.subtract(stored)
        asked = Counter(fresh.asked)
        again = {p: asked[p] - added[p] for p in stored if asked[p] > added[p]}
        assert set(again) <= {("logprob", record.prompt)} and sum(again.values()) <= 1, (trial, mode, again)
        assert len({key(e) for e in final.evaluations}) == len(final.evaluations)
        assert {key(e) for e in record.evaluations} <= {key(e) for e in final.evaluations}

        straight = prompt_attr.attribute(
            prompt, backend=FakeBackend(logprobs=logprobs), runs_dir=tmp_path / "straight", cache=False, **options
        )
        assert [s.score for s in done.record.attribution] == pytest.approx([s.score for s in straight.record.attribution])
        assert len(done.record.evaluations) == len(straight.record.evaluations)
        resumed += 1
    print(f"interrupts: {TRIALS} trials, stopped mid-run {outcomes}, {resumed} resumed to the same attribution")
    assert all(n >= 5 for n in outcomes.values()), outcomes
    assert resumed >= 30, resumed


def calls_of(record, evaluations) -> Counter:
    """The calls the evaluations made: (kind, prompt) counted."""
    return Counter(("logprob" if e.output is None else "complete", ev_prompt(record, e)) for e in evaluations)


def ev_prompt(record, evaluation) -> str:
    """The prompt text an evaluation sent (its spans deleted, or a placebo added)."""
    from prompt_attr_widget.stages.noise import placebo_prompt
    from prompt_attr_widget.stages.segment import render

    if evaluation.purpose == "placebo":
        return placebo_prompt(record.prompt, record.spans, evaluation.repeat, record.settings.seed,
                              record.baseline.output or "")
    keep = [i not in set(evaluation.dropped) for i in range(len(record.spans))]
    return render(record.prompt, record.spans, keep)


# --- resume: what may change, what may not -------------------------------------------------------


PRICE = dict(price=prompt_attr.Price(input=1000, output=1000), embed_price=prompt_attr.Price(input=0))
PROMPT = "Alpha one. Beta two. Gamma three. Delta four. Epsilon five. Zeta six."


def aborted_run(runs_dir, stop_after: int = 6):
    """A run of the priced fake model (as the CLI would name it), interrupted after a few events."""
    seen = []

    def sink(event):
        seen.append(event)
        if len(seen) == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prompt_attr.attribute(PROMPT, model="fake", runs_dir=runs_dir, method="loo", faithfulness="off",
                              on_event=sink, **PRICE)
    [run_id] = run_ids(runs_dir)
    record = read_run(run_id, runs_dir)
    assert record.status == "aborted" and record.evaluations
    return record


class OverBilling(FakeBackend):
    """A server that reports far more prompt tokens than the projection allowed for."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.asked: list[str] = []

    async def complete(self, messages, params):
        self.asked.append(messages[-1]["content"])
        c = await super().complete(messages, params)
        c.prompt_tokens *= 40
        return c


def test_a_budget_stop_resumes_with_a_larger_budget(runs_dir):
    backend = OverBilling(**PRICE)
    options = dict(backend=backend, runs_dir=runs_dir, method="loo", faithfulness="off", **PRICE)
    with pytest.raises(prompt_attr.BudgetRefused) as refused:
        prompt_attr.attribute(PROMPT, budget=0.0, **options)
    budget = refused.value.projected_usd * 1.05  # passes the projection; the over-billing stops it
    first = prompt_attr.attribute(PROMPT, budget=budget, **options)
    assert first.status == "aborted" and "budget" in first.record.reason
    done = prompt_attr.attribute(resume=first.run_id, budget=budget * 100, **options)
    assert done.status == "finished" and done.run_id == first.run_id
    # the spend adds up over both sessions, and nothing was bought twice
    assert done.record.spend.usd > first.record.spend.usd
    # nothing asked twice: the baseline, each span, the 8 placebos (the behavioural check reuses answers)
    assert len(backend.asked) == len(set(backend.asked)) == len(done.spans) + 1 + 8
    assert len(done.record.resumed_at) == 1
    assert [r.run_id for r in prompt_attr.list_runs(runs_dir)] == [first.run_id]
    # a resumed budget still counts the first session's dollars
    again = prompt_attr.attribute(PROMPT, budget=budget, cache=False, **options)
    assert again.status == "aborted"
    with pytest.raises(prompt_attr.BudgetRefused):
        prompt_attr.attribute(resume=again.run_id, budget=again.record.spend.usd, cache=False, **options)


def test_resume_refuses_what_would_change_the_results(runs_dir, fake):
    first = aborted_run(runs_dir)
    with pytest.raises(UsageError, match="method"):
        prompt_attr.attribute(resume=first.run_id, backend=fake, runs_dir=runs_dir, method="surrogate")
    with pytest.raises(UsageError, match="prompt differs"):
        prompt_attr.attribute("Another prompt.", resume=first.run_id, backend=fake, runs_dir=runs_dir)
    with pytest.raises(UsageError, match="model"):
        prompt_attr.attribute(resume=first.run_id, model="gpt-4o-mini", runs_dir=runs_dir)
    finished = prompt_attr.attribute(resume=first.run_id, backend=fake, runs_dir=runs_dir)
    with pytest.raises(UsageError, match="already finished"):
        prompt_attr.attribute(resume=finished.run_id, backend=fake, runs_dir=runs_dir)
    with pytest.raises(prompt_attr.RunNotFound):
        prompt_attr.attribute(resume="20990101T000000000Z-00000000", backend=fake, runs_dir=runs_dir)
    with pytest.raises(UsageError, match="not a run id"):
        prompt_attr.attribute(resume="../../etc", backend=fake, runs_dir=runs_dir)


def test_a_run_being_written_cannot_be_resumed_by_another_writer(runs_dir, fake):
    from prompt_attr_widget.store.runs import RunWriter

    first = aborted_run(runs_dir)
    holder = RunWriter(runs_dir)
    holder.resume(read_run(first.run_id, runs_dir))  # another process has it open
    try:
        with pytest.raises(UsageError, match="another process"):
            prompt_attr.attribute(resume=first.run_id, backend=fake, runs_dir=runs_dir)
    finally:
        holder.release()
    assert prompt_attr.attribute(resume=first.run_id, backend=fake, runs_dir=runs_dir).status == "finished"


def test_cli_resume(runs_dir, capsys):
    first = aborted_run(runs_dir)
    assert cli(["show", first.run_id, "--runs-dir", str(runs_dir)]) == 0
    capsys.readouterr()
    code = cli(["resume", first.run_id[:12], "--runs-dir", str(runs_dir), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads(out.out)
    assert record["status"] == "finished" and record["run_id"] == first.run_id and record["resumed_at"]
    assert cli(["resume", first.run_id, "--runs-dir", str(runs_dir)]) == 2
    assert "already finished" in capsys.readouterr().err
    assert cli(["resume", "nope", "--runs-dir", str(runs_dir)]) == 2

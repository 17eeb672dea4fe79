"""Fault injection: a run survives transient server faults and explains permanent ones.

Every test talks through the real `openai` SDK to tests/fault_server.py on
127.0.0.1, which injects faults deterministically (seed, request body,
attempt number). With `transient_for=N` only a body's first N attempts can
fail, so a client with at least N retries must get through: a test that
expects survival cannot pass or fail by luck.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from fault_server import DIM, FAULT_KINDS, serve

import prompt_attr
from prompt_attr import BackendError
from prompt_attr_widget.backends.base import Embeddings, GenerationParams
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.backends.openai import OpenAIBackend
from prompt_attr_widget.core.events import BaselineDone, Evaluated

BROKEN = {"truncated_json", "malformed_json", "empty_choices", "wrong_dim"}  # 200s with a broken body
KEY = "sk-test-CANARY-123"
TIMEOUT_S = 0.5
SMALL = "It is day one. It met Blue Falcon. It is grey here. It saw Red Kite. It is late now. It ends."
# 40 spans; every seventh sentence plants a capitalised culprit word the fake model repeats.
LONG = " ".join(f"It says Culprit{i}." if i % 7 == 3 else f"It is note {i}." for i in range(40))
# What each fault says in the run's reason, and the advice that comes with it.
EXPLAINED = {
    "http_503": r"HTTP 503 from {url} after \d+ attempts.*--max-retries",
    "rate_limit": r"{url} kept rate-limiting \(HTTP 429\) after \d+ attempts.*--rpm",
    "timeout": r"no answer from {url} within 0.5 s.*--timeout",
    "dropped": r"connection dropped: {url} closed it without an answer.*--max-retries",
    "malformed_json": r"malformed JSON \(not JSON at all.* from {url} after \d+ attempts.*--max-retries",
    "truncated_json": r"malformed JSON \(truncated or invalid\) from {url} after \d+ attempts",
    "empty_choices": r"(an answer with no choices|No embedding data received).* from {url} after \d+ attempts",
    "wrong_dim": rf"embeddings of {DIM // 2} numbers \(the first had {DIM}\) from {{url}} after \d+ attempts",
}


def attribute(server, prompt: str, runs_dir, **options) -> prompt_attr.Attribution:
    """A run against the fault server, with small timeouts so faults cost little time."""
    options = {
        "model": "srv", "base_url": server.url, "api_key": KEY, "runs_dir": runs_dir, "cache": False,
        "timeout": TIMEOUT_S, "max_retries": 3, "concurrency": 8, "method": "loo", "segment": "sentence",
        "faithfulness": "off", **options,
    }
    return prompt_attr.attribute(prompt, **options)


def clean_run(server, prompt, runs_dir, **options) -> prompt_attr.Attribution:
    """The fault-free reference; the server then forgets it, so faults start from attempt 0."""
    run = attribute(server, prompt, runs_dir, **options)
    assert run.status == "finished", run.record.reason
    assert not server.stats.faults
    server.reset()
    return run


def outcome(run) -> dict:
    """Everything a fault must not change (evaluation ids follow arrival order, so they may)."""
    rec = run.record
    return {
        "status": run.status,
        "scorer": rec.scorer,
        "baseline": rec.baseline.output,
        "noise": rec.noise.model_dump(),
        "attribution": [s.model_dump(exclude={"evaluation"}) for s in rec.attribution],
        "evaluations": sorted((e.dropped, e.score, e.output, e.purpose) for e in rec.evaluations),
        # the same tokens: no evaluation counted twice (calls count billed attempts: see below)
        "spend": rec.spend.model_dump(exclude={"calls"}),
    }


def stored_evaluations(run) -> tuple[list, list]:
    """The evaluations in run.json and those streamed to events.jsonl, both by id."""
    record = json.loads((run.path / "run.json").read_text("utf-8"))
    events = [json.loads(line) for line in (run.path / "events.jsonl").read_text("utf-8").splitlines()]
    streamed = [e["evaluation"] for e in events if e["type"] == "evaluated"]
    return sorted(record["evaluations"], key=lambda e: e["id"]), sorted(streamed, key=lambda e: e["id"])


def switch_after(server, event_type, count: int = 1, **faults):
    """An on_event sink that reconfigures the server once `count` events of a type arrived."""
    seen = []

    def sink(event):
        if isinstance(event, event_type):
            seen.append(event)
            if len(seen) == count:
                server.configure(**faults)

    return sink


def assert_key_nowhere(run) -> None:
    assert KEY not in (run.record.reason or "")
    for name in ("run.json", "events.jsonl"):
        assert KEY not in (run.path / name).read_text("utf-8")


# --- transient faults ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_request_failing_once_is_survived(kind, fault_server, runs_dir):
    clean = clean_run(fault_server, SMALL, runs_dir)
    faults = {"rate": 1.0, "kinds": [kind], "transient_for": 1}
    if kind == "wrong_dim":
        # A wrong size in the very first embedding cannot be told from a right one:
        # that fault can only be recognised against the baseline's size.
        run = attribute(fault_server, SMALL, runs_dir, on_event=switch_after(fault_server, BaselineDone, **faults))
    else:
        fault_server.configure(**faults)
        run = attribute(fault_server, SMALL, runs_dir)
    assert outcome(run) == outcome(clean), run.record.reason
    stats = fault_server.stats
    assert stats.faults[kind] >= 2  # the fault really was met
    # A broken answer was billed, so every attempt is a call of its own, within the budget;
    # what HTTP said failed the SDK retried inside one call.
    calls = len(stats.requests) if kind in BROKEN else clean.record.spend.calls
    assert run.record.spend.calls == calls
    assert set(stats.authorizations) == {f"Bearer {KEY}"}


@pytest.mark.parametrize("logprobs", [False, True], ids=["embedding", "logprob"])
def test_long_prompt_under_mixed_faults_gives_the_same_attribution(logprobs, runs_dir):
    with serve(logprobs=logprobs) as server:
        clean = clean_run(server, LONG, runs_dir)
        assert len(clean.spans) == 40 and clean.record.scorer == ("logprob" if logprobs else "embedding")
        # Not wrong_dim: it is only a fault once the baseline's size is known (see above).
        server.configure(rate=0.3, kinds=[k for k in FAULT_KINDS if k != "wrong_dim"], transient_for=3)
        run = attribute(server, LONG, runs_dir)
        stats = server.stats
    assert outcome(run) == outcome(clean), run.record.reason
    in_run_json, in_events = stored_evaluations(run)
    assert in_run_json == in_events and len(in_run_json) == len(run.record.evaluations)
    assert sum(stats.faults.values()) >= 0.2 * len(stats.requests)  # ~30% of attempts were faults
    assert len(stats.faults) >= 6  # of many kinds
    print(f"mixed faults ({run.record.scorer}): {sum(stats.faults.values())} of {len(stats.requests)} "
          f"requests faulted, {dict(stats.faults)}; same attribution, {run.record.spend.calls} calls as without faults")


def test_a_flaky_probe_does_not_switch_the_scorer(runs_dir):
    with serve(logprobs=True) as server:
        server.configure(rate=1.0, kinds=["http_503", "dropped", "malformed_json"], transient_for=2)
        run = attribute(server, SMALL, runs_dir)
        probes = [r for r in server.stats.requests if r.path == "/v1/completions" and r.attempt < 2]
    assert run.status == "finished" and run.record.scorer == "logprob"
    assert all(r.fault for r in probes)


def test_retry_after_is_honoured(fault_server):
    wait_s = 0.7  # longer than the SDK's own first backoff (at most 0.5 s)
    fault_server.configure(rate=1.0, kinds=["rate_limit"], transient_for=1, retry_after_ms=int(wait_s * 1000))
    backend = OpenAIBackend("srv", base_url=fault_server.url, api_key=KEY, timeout=5, max_retries=1)

    async def ask():
        try:
            return await backend.complete([{"role": "user", "content": "Where is Paris?"}], GenerationParams())
        finally:
            await backend.aclose()

    assert asyncio.run(ask()).text == "Where Paris"
    first, second = fault_server.stats.requests
    assert (first.fault, second.fault) == ("rate_limit", None) and first.body_sha == second.body_sha
    assert second.at - first.at >= wait_s


# --- permanent faults ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXPLAINED))
def test_a_permanent_fault_fails_the_run_with_what_was_received(kind, fault_server, runs_dir):
    """The server breaks for good after 3 evaluations: the run fails, explained, nothing lost.

    One call at a time, so the calls after the break really meet it.
    """
    breaks = switch_after(fault_server, Evaluated, 3, permanent=kind, retry_after_ms=1)
    run = attribute(fault_server, SMALL, runs_dir, max_retries=1, concurrency=1, on_event=breaks)
    assert run.status == "failed"
    reason = run.record.reason
    assert re.search(EXPLAINED[kind].format(url=re.escape(fault_server.url)), reason), reason
    assert run.record.baseline is not None and len(run.record.evaluations) >= 3
    in_run_json, in_events = stored_evaluations(run)
    assert in_run_json == in_events
    assert prompt_attr.load_run(run.run_id, runs_dir=runs_dir).record.evaluations == run.record.evaluations
    assert_key_nowhere(run)


def test_a_server_broken_from_the_start(fault_server, runs_dir):
    """The log-probability probe cannot tell, so no run starts; asked for embeddings, it fails."""
    fault_server.configure(permanent="http_503", retry_after_ms=1)
    with pytest.raises(BackendError) as info:
        attribute(fault_server, SMALL, runs_dir, max_retries=1)
    message = str(info.value)
    assert message.startswith(f"HTTP 503 from {fault_server.url}") and "while checking whether" in message
    assert "--scorer embedding" in message
    assert info.value.transient and KEY not in message
    assert not runs_dir.exists() or not any(runs_dir.iterdir())

    run = attribute(fault_server, SMALL, runs_dir, max_retries=1, scorer="embedding")
    assert run.status == "failed" and run.record.baseline is None
    assert re.search(EXPLAINED["http_503"].format(url=re.escape(fault_server.url)), run.record.reason)
    assert_key_nowhere(run)


def test_a_clear_no_from_the_probe_picks_embeddings(fault_server):
    backend = OpenAIBackend("srv", base_url=fault_server.url, api_key=KEY, timeout=5, max_retries=1)

    async def probe():
        try:
            return await backend.supports_logprob()
        finally:
            await backend.aclose()

    assert asyncio.run(probe()) is False  # 404: the server has no completions endpoint
    assert [r.path for r in fault_server.stats.requests] == ["/v1/completions"]  # asked once, not retried


def test_embeddings_of_another_size_are_never_compared(runs_dir):
    """Any backend: the one place that compares embeddings refuses sizes that differ."""

    class Shrinking(FakeBackend):
        async def embed(self, texts):
            got = await super().embed(texts)
            size = DIM if self.embed_calls == 1 else DIM // 2
            return Embeddings(vectors=[v[:size] for v in got.vectors], prompt_tokens=got.prompt_tokens)

    run = prompt_attr.attribute(SMALL, backend=Shrinking(), runs_dir=runs_dir, method="loo", segment="sentence")
    assert run.status == "failed"
    assert f"embedding sizes differ ({DIM} vs {DIM // 2} numbers)" in run.record.reason
    assert "--embed-model" in run.record.reason


def test_an_answer_with_a_lone_surrogate_is_stored_as_valid_text(fault_server, runs_dir):
    """JSON may carry "\\ud800"; Python accepts it, no run file could: it becomes U+FFFD."""
    fault_server.configure(permanent="lone_surrogate")
    run = attribute(fault_server, "It rains. The Blue Falcon landed. My cat slept.", runs_dir)
    assert run.status == "finished", run.record.reason
    assert run.baseline.endswith("\ufffd") and all("\ud800" not in (e.output or "") for e in run.record.evaluations)
    assert prompt_attr.load_run(run.run_id, runs_dir=runs_dir).baseline == run.baseline

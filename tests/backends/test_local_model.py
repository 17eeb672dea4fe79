"""Integration tests on the real embedded model (SmolLM2-135M through llama-cpp-python).

Slow by the standards of the unit tests (model calls on CPU), so answers
are kept short (max_tokens <= 48) and runs few: the whole file aims at well
under 90 s on two cores.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget.backends.base import GenerationParams
from prompt_attr_widget.core.schema import RunRecord

PROMPT = """### Role
You are a helpful travel assistant for a small tour company.

### Facts
The Eiffel Tower is in Paris. It opens at 9 am and tickets cost 29 euros.

### Style
Always answer in French.

### Audience
The reader is a ten-year-old child visiting Paris for the first time.

### Question
When does the Eiffel Tower open, and how much is a ticket?
"""

SECTIONS = ["### Role", "### Facts", "### Style", "### Audience", "### Question"]


def _guard_model(m: pytest.MonkeyPatch) -> None:
    """Make every way to reach a model raise, for the rest of monkeypatch context `m`."""
    import llama_cpp

    import prompt_attr_widget.api as api_mod
    import prompt_attr_widget.backends as backends_mod
    import prompt_attr_widget.backends.local as local_mod

    def boom(*args, **kwargs):
        raise AssertionError("a model was touched")

    cls = local_mod.LocalBackend
    for name in ("__init__", "_model", "_complete_sync", "_greedy_sync", "_embed_sync", "_logprob_sync"):
        m.setattr(cls, name, boom)
    m.setattr(local_mod, "LocalBackend", boom)
    m.setattr(backends_mod, "resolve_backend", boom)
    m.setattr(api_mod, "resolve_backend", boom)
    for name in ("__init__", "create_chat_completion", "create_completion", "embed", "eval"):
        m.setattr(llama_cpp.Llama, name, boom)


EMBEDDING = {"scorer": "embedding", "faithfulness": "off"}  # the distance scorer, and only attribution calls


def _check_record(att: prompt_attr.Attribution, prompt: str) -> None:
    rec = att.record
    assert rec.status == "finished", rec.reason
    assert rec.backend.backend == "local"
    assert re.fullmatch(r"[0-9a-f]{64}", rec.backend.fingerprint["gguf_sha256"])
    assert att.baseline and att.baseline.strip(), "the local model gave an empty baseline"
    assert 0 < rec.baseline.completion_tokens <= 48
    # Spans are real slices of the prompt, in order, and every section is covered.
    assert len(att.spans) >= len(SECTIONS)
    for span in att.spans:
        assert prompt[span.start : span.end] == span.text
    assert [s.start for s in att.spans] == sorted(s.start for s in att.spans)
    covered = "".join(s.text for s in att.spans)
    for heading in SECTIONS:
        assert heading in covered
    assert "Always answer in French." in covered
    # One finite score in [0, 1] per span; each evaluation is scored against the baseline.
    assert sorted(s.index for s in rec.attribution) == list(range(len(att.spans)))
    for s in att.spans:
        assert math.isfinite(s.score) and 0.0 <= s.score <= 1.0
    assert rec.evaluations
    for ev in rec.evaluations:  # a placebo deletes nothing of the prompt: it adds a sentence
        assert (bool(ev.dropped) != (ev.purpose == "placebo")) and 0.0 <= ev.score <= 1.0
        if ev.output == att.baseline:
            assert ev.score == 0.0
        else:
            assert ev.cosine is not None and -1.0 - 1e-6 <= ev.cosine <= 1.0 + 1e-6
    assert rec.spend.usd == 0.0  # the embedded model is free, and says so


@pytest.mark.local
def test_attribute_saves_replays_and_caches(runs_dir, monkeypatch):
    live = prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=48, **EMBEDDING)
    _check_record(live, PROMPT)
    assert live.record.config["method"] == "hierarchical"
    assert live.record.spend.calls > 0

    run_json = runs_dir / live.run_id / "run.json"
    on_disk = RunRecord.model_validate_json(run_json.read_bytes())
    assert on_disk == live.record
    events = (runs_dir / live.run_id / "events.jsonl").read_text("utf-8").splitlines()
    kinds = [json.loads(line)["type"] for line in events]
    assert kinds.count("call_reserved") == kinds.count("call_settled") == live.record.spend.calls  # free, still booked
    kinds = [k for k in kinds if not k.startswith("call_")]
    assert kinds[:2] == ["run_started", "baseline"] and kinds[-1] == "run_finished"
    assert kinds.count("evaluated") == len(live.record.evaluations)

    # Replay: the same Attribution, and provably no model call on the way.
    with monkeypatch.context() as m:
        _guard_model(m)
        with pytest.raises(AssertionError, match="model was touched"):
            prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=48, **EMBEDDING)  # the guard is live
        loaded = prompt_attr.load_run(live.run_id, runs_dir=runs_dir)
        latest = prompt_attr.load_run("latest", runs_dir=runs_dir)
    assert loaded == live and latest == live
    assert loaded.spans == live.spans and loaded.baseline == live.baseline
    assert loaded.to_json() == live.to_json()

    # A second identical run is served entirely from the cache: no model work at all.
    with monkeypatch.context() as m:
        import prompt_attr_widget.backends.local as local_mod

        def boom(*args, **kwargs):
            raise AssertionError("a cached run reached the model")

        for name in ("_complete_sync", "_greedy_sync", "_embed_sync"):
            m.setattr(local_mod.LocalBackend, name, boom)
        again = prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=48, **EMBEDDING)
    assert again.status == "finished", again.record.reason
    assert again.run_id != live.run_id
    assert again.record.spend.calls == 0
    assert again.record.spend.cache_hits > 0
    assert again.record.baseline.cache_hit
    assert all(ev.cache_hit for ev in again.record.evaluations)
    assert again.baseline == live.baseline
    assert [s.score for s in again.spans] == [s.score for s in live.spans]
    assert again.record.prompt_sha256 == live.record.prompt_sha256

    # Leave-one-out on the same prompt: one evaluation per span, every span resolved.
    loo = prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=48, method="loo", **EMBEDDING)
    _check_record(loo, PROMPT)
    n = len(loo.spans)
    attribution = [ev for ev in loo.record.evaluations if ev.purpose == "attribution"]
    assert sorted(tuple(ev.dropped) for ev in attribution) == [(i,) for i in range(n)]
    by_dropped = {ev.dropped[0]: ev for ev in attribution}
    for span, score in zip(loo.spans, sorted(loo.record.attribution, key=lambda s: s.index), strict=True):
        assert span.resolved and score.resolved
        assert span.score == pytest.approx(by_dropped[span.index].score)
        assert span.ablated_output == by_dropped[span.index].output
    assert [r.run_id for r in prompt_attr.list_runs(runs_dir=runs_dir)] == sorted(
        [live.run_id, again.run_id, loo.run_id]
    )


def _section_spans(prompt: str) -> list[tuple[int, int]]:
    starts = [m.start() for m in re.finditer(r"^### ", prompt, flags=re.MULTILINE)]
    return [(a, b) for a, b in zip(starts, [*starts[1:], len(prompt)], strict=True)]


@pytest.mark.local
def test_uncached_runs_are_deterministic(runs_dir, tmp_path):
    # One span per section keeps this to 6 calls a run (baseline + 5 deletions).
    spans = _section_spans(PROMPT)
    assert len(spans) == len(SECTIONS)
    runs = [
        prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=16, spans=spans, cache=False)
        for _ in range(2)
    ]
    for run in runs:
        assert run.status == "finished", run.record.reason
        assert [sp.text.splitlines()[0] for sp in run.spans] == SECTIONS  # one span a section
        assert run.record.spend.calls > len(run.spans)  # really called the model...
        assert run.record.spend.cache_hits == 0  # ...and never read a cache
        assert not run.record.baseline.cache_hit
    assert not (tmp_path / "cache").exists(), "cache=False still wrote the call cache"
    first, second = runs
    assert first.baseline == second.baseline  # temperature 0, seed 42
    outputs = [{(tuple(e.dropped), e.purpose, e.repeat): e.output for e in run.record.evaluations} for run in runs]
    assert outputs[0] == outputs[1]
    assert [s.score for s in first.spans] == pytest.approx([s.score for s in second.spans], abs=1e-9)


@pytest.mark.local
def test_teacher_forced_logprob():
    import llama_cpp

    from prompt_attr_widget.backends.local import LocalBackend, embedded_model_path

    backend = LocalBackend()
    tokenizer = llama_cpp.Llama(model_path=str(embedded_model_path()), vocab_only=True, verbose=False)

    def n_tokens(text: str) -> int:
        return len(tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    messages = [{"role": "user", "content": "The capital of France is"}]

    def lp(continuation: str) -> list[float]:
        scored = asyncio.run(backend.logprob(messages, continuation))
        assert len(scored.offsets) == len(scored.logprobs) and scored.length == len(continuation)
        assert scored.offsets == sorted(scored.offsets)
        return scored.logprobs

    scores = {text: lp(text) for text in ["Paris", "Paris.", "banana", "The capital of France is Paris."]}
    for text, values in scores.items():
        assert len(values) == n_tokens(text), text
        assert all(isinstance(v, float) and math.isfinite(v) and v <= 0.0 for v in values), (text, values)
    assert sum(scores["Paris"]) > sum(scores["banana"])
    assert scores["Paris"][0] > scores["banana"][0]
    # Teacher forcing: a token's log-probability depends only on what precedes it.
    assert scores["Paris."][0] == pytest.approx(scores["Paris"][0], abs=1e-3)
    assert lp("") == []

    # The prompt logprob() renders is the one generation uses: the greedy answer's
    # first token is the most likely one, so it beats any other first token.
    greedy = asyncio.run(backend.complete(messages, GenerationParams(max_tokens=8, temperature=0.0, seed=42))).text
    assert greedy.strip()
    first = lp(greedy)[0]
    greedy_first = tokenizer.tokenize(greedy.encode("utf-8"), add_bos=False)[0]
    for other in ["Paris", "banana", "The", "Tokyo", "Yes"]:
        if tokenizer.tokenize(other.encode("utf-8"), add_bos=False)[0] != greedy_first:
            assert first >= lp(other)[0] - 1e-3, (greedy, other)


@pytest.mark.local
def test_missing_and_broken_model_files(runs_dir, tmp_path):
    with pytest.raises(UsageError, match=re.escape("/nonexistent.gguf")):
        prompt_attr.attribute("Say hello.", model="local:/nonexistent.gguf", runs_dir=runs_dir)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # refused before any run began

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 256)
    run = prompt_attr.attribute("Say hello. Then stop.", model=f"local:{bad}", runs_dir=runs_dir, max_tokens=8)
    assert run.status == "failed"
    assert str(bad) in run.record.reason and "could not load" in run.record.reason


@pytest.mark.local
def test_prompt_longer_than_context_fails_cleanly(runs_dir):
    from prompt_attr_widget.backends.local import LocalBackend

    long_prompt = "### Facts\n" + "\n\n".join(
        f"Fact number {i}: the quick brown fox jumps over the lazy dog near river {i}." for i in range(300)
    ) + "\n\n### Question\nWhat is fact 7?"
    run = prompt_attr.attribute(long_prompt, model="local", runs_dir=runs_dir, max_tokens=16)
    assert run.status == "failed"
    assert "too long" in run.record.reason and "2048" in run.record.reason
    assert run.record.baseline is None
    saved = RunRecord.model_validate_json((runs_dir / run.run_id / "run.json").read_bytes())
    assert saved.status == "failed" and saved.reason == run.record.reason

    backend = LocalBackend()
    with pytest.raises(UsageError, match="exceed the local context"):
        asyncio.run(backend.logprob([{"role": "user", "content": long_prompt}], "Paris"))
    # The shared model is still usable after both refusals.
    answer = asyncio.run(backend.complete([{"role": "user", "content": "Say hi."}], GenerationParams(max_tokens=4)))
    assert answer.text.strip() and answer.completion_tokens > 0


@pytest.mark.local
def test_default_local_run_scores_log_probabilities_and_replays_from_cache(runs_dir, monkeypatch):
    live = prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=48, target=None)
    rec = live.record
    assert rec.status == "finished", rec.reason
    assert rec.scorer == "logprob" and rec.score_unit == "log-prob drop (nats/token)"
    assert rec.noise.repeats == 1 and rec.noise.floor == rec.noise.min_effect == 0.1
    attribution = [e for e in rec.evaluations if e.purpose == "attribution"]
    assert attribution and all(e.output is None and math.isfinite(e.score) for e in attribution)
    # score = baseline mean log-prob minus the ablated one, exactly as stored
    assert all(e.score == pytest.approx(-(e.target_logprob - attribution[0].target_logprob - attribution[0].score))
               for e in attribution)
    assert rec.faithfulness is not None and rec.faithfulness.top_k_score is not None
    assert any(s.significant for s in live.spans)
    with monkeypatch.context() as m:
        import prompt_attr_widget.backends.local as local_mod

        def boom(*args, **kwargs):
            raise AssertionError("a cached run reached the model")

        for name in ("_complete_sync", "_greedy_sync", "_embed_sync", "_logprob_sync"):
            m.setattr(local_mod.LocalBackend, name, boom)
        again = prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir, max_tokens=48)
    assert again.record.spend.calls == 0
    assert again.record.attribution == rec.attribution


@pytest.mark.local
@pytest.mark.parametrize("reuse", ["1", "0"], ids=["prefix-reuse", "no-reuse"])
def test_an_answer_does_not_depend_on_the_previous_call(monkeypatch, reuse):
    """The same prompt gets the same greedy answer and log-probs whatever was asked before.

    llama-cpp-python's own KV prefix reuse evaluates a cached prompt's last
    token alone, whose logits differ in the last bits from a batched
    evaluation, and greedy decoding then took another path on this very
    prompt; the aligned chunks (backends/kv.py) must not.
    """
    from prompt_attr_widget.backends.local import LocalBackend

    monkeypatch.setenv("PROMPT_ATTR_LOCAL_PREFIX_REUSE", reuse)
    backend = LocalBackend()
    params = GenerationParams(max_tokens=48, temperature=0.0, seed=42)
    italian = [{"role": "user", "content": "I want to learn to paint.\nAnswer in Italian only.\nWhere should I start?"}]
    other = [{"role": "user", "content": "I want to learn to paint.\nWhere should I start?"}]

    def ask(messages):
        return asyncio.run(backend.complete(messages, params)).text

    first = ask(italian)
    ask(other)
    assert ask(italian) == first  # after a prompt sharing its prefix
    assert ask(italian) == first  # straight after itself: the whole prompt is cached
    scored = [asyncio.run(backend.logprob(italian, first)).logprobs for _ in range(2)]
    asyncio.run(backend.logprob(other, first))
    scored.append(asyncio.run(backend.logprob(italian, first)).logprobs)
    assert scored[0] == scored[1] == scored[2]


def _count_model_calls(m: pytest.MonkeyPatch) -> dict:
    """Count every call that reaches the local model, for the rest of monkeypatch context `m`."""
    import prompt_attr_widget.backends.local as local_mod

    counts = {"calls": 0}
    for name in ("_complete_sync", "_greedy_sync", "_embed_sync", "_logprob_sync"):
        real = getattr(local_mod.LocalBackend, name)

        def counted(self, *args, _real=real, **kwargs):
            counts["calls"] += 1
            return _real(self, *args, **kwargs)

        m.setattr(local_mod.LocalBackend, name, counted)
    return counts


@pytest.mark.local
@pytest.mark.parametrize("method", ["loo", "surrogate"])
def test_any_part_of_the_answer_from_stored_evaluations_equals_a_targeted_run(runs_dir, monkeypatch, method, capsys):
    """An untargeted run, then two parts of its answer explained with zero model calls, each equal
    (within 1e-3) to a fresh uncached run targeted at that part with the same masks."""
    from prompt_attr_widget.cli import main

    options = {"model": "local", "method": method, "masks": 16, "max_tokens": 48, "faithfulness": "off",
               "cache": False, "runs_dir": runs_dir}
    with monkeypatch.context() as m:
        counts = _count_model_calls(m)
        whole = prompt_attr.attribute(PROMPT, **options)
        assert whole.status == "finished" and counts["calls"] > 0
        parts = whole.answer_sentences()
        answer = whole.baseline
        if len(parts) >= 2:
            chosen = [(parts[0].start, parts[0].end), (parts[-1].start, parts[-1].end)]
        else:  # a build that answers in one sentence: its two halves, cut at a space
            cut = answer.rfind(" ", 0, len(answer) // 2 + 1)
            chosen = [(0, cut), (cut + 1, len(answer))]
        rows = [next(r for r, p in enumerate(parts) if (p.start, p.end) == c) if len(parts) >= 2 else None
                for c in chosen]
        before = counts["calls"]
        derived = [whole.for_target(c) for c in chosen]
        matrix = whole.matrix()
        assert main(["show", whole.run_id, "--runs-dir", str(runs_dir), "--target-range", f"{chosen[1][0]}:{chosen[1][1]}",
                     "--no-color"]) == 0
        assert counts["calls"] == before  # for_target, matrix() and show --target asked the model nothing
    shown = capsys.readouterr().out
    assert "no model call" in shown
    for part, view, row in zip(chosen, derived, rows, strict=True):
        fresh = prompt_attr.attribute(PROMPT, target=part, **options)
        assert fresh.record.target == view.record.target
        for a, b in zip(view.spans, fresh.spans, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3), (part, a, b)
            assert (a.stderr is None) == (b.stderr is None)
            if a.stderr is not None:
                assert a.stderr == pytest.approx(b.stderr, abs=1e-3)
            assert a.significant == b.significant
        if row is not None:  # a sentence: its row of the matrix is the same view
            assert [s.score for s in view.spans] == pytest.approx(list(matrix.scores[row]), abs=1e-9)
    # the two parts are explained apart, not as the whole answer blends them
    assert [s.score for s in derived[0].spans] != pytest.approx([s.score for s in derived[1].spans], abs=1e-3)


@pytest.mark.local
def test_answer_only_logits_give_the_numbers_every_positions_logits_give():
    """The log-probability path asks llama.cpp for the logits of the answer's positions only; a
    context computing every position's (llama-cpp-python's logits_all) gives the same numbers,
    also for an answer longer than one llama.cpp batch (512 tokens)."""
    from prompt_attr_widget.backends.local import LocalBackend

    backend = LocalBackend()
    messages = [{"role": "user", "content": PROMPT}]
    for answer in ("A: The Eiffel Tower is in Paris. It opens at 9 am.", " ".join(["The tower is tall."] * 130)):
        fast = backend._logprob_sync(messages, answer)
        full = backend._logprob_sync(messages, answer, every_position=True)
        assert fast.offsets == full.offsets and fast.prompt_tokens == full.prompt_tokens
        assert len(fast.logprobs) == len(full.logprobs) > 0
        assert max(abs(a - b) for a, b in zip(fast.logprobs, full.logprobs, strict=True)) <= 1e-4
    assert len(fast.logprobs) > 512


@pytest.mark.local
def test_prefix_reuse_and_the_order_of_evaluations_change_no_result(runs_dir, monkeypatch):
    """A leave-one-out run with prefix reuse on, off (PROMPT_ATTR_LOCAL_PREFIX_REUSE=0), and
    with its evaluations in the opposite order gets the same answer and scores (to 1e-4;
    bit for bit by design), while reuse really skipped decoding work."""
    import prompt_attr_widget.engine.run as run_mod
    from prompt_attr_widget.backends.local import LocalBackend

    options = {"model": "local", "method": "loo", "faithfulness": "off", "cache": False, "max_tokens": 32,
               "runs_dir": runs_dir}

    def reused_tokens(run_it):
        kv = LocalBackend()._decoder()[1]
        before = kv.totals[2]
        run = run_it()
        assert run.status == "finished", run.record.reason
        return run, kv.totals[2] - before

    on, reused_on = reused_tokens(lambda: prompt_attr.attribute(PROMPT, **options))
    with monkeypatch.context() as m:
        m.setenv("PROMPT_ATTR_LOCAL_PREFIX_REUSE", "0")
        off, reused_off = reused_tokens(lambda: prompt_attr.attribute(PROMPT, **options))
    with monkeypatch.context() as m:
        m.setattr(run_mod, "prefix_order", lambda masks, n: sorted(masks))  # the first span's deletion first
        flipped, _ = reused_tokens(lambda: prompt_attr.attribute(PROMPT, **options))
    assert reused_on > 0 and reused_off == 0

    def key(e):
        return tuple(e.dropped), e.purpose, e.repeat

    def order(run):
        return [key(e) for e in run.record.evaluations if e.purpose == "attribution"]

    assert order(flipped) != order(on) and sorted(order(flipped)) == sorted(order(on))
    for other in (off, flipped):
        assert other.baseline == on.baseline
        scores = {key(e): e.score for e in other.record.evaluations}
        for e in on.record.evaluations:  # the placebos and behavioural checks too
            assert scores[key(e)] == pytest.approx(e.score, abs=1e-4)
        assert [s.score for s in other.spans] == pytest.approx([s.score for s in on.spans], abs=1e-4)


@pytest.mark.local
def test_aligned_chunks_reuse_whole_chunks_of_the_common_prefix_and_compute_what_a_fresh_cache_does(monkeypatch):
    from prompt_attr_widget.backends.kv import CHUNK
    from prompt_attr_widget.backends.local import LocalBackend

    backend = LocalBackend()
    llm, kv = backend._decoder()
    a = backend._prompt_ids(llm, [{"role": "user", "content": PROMPT}])
    b = backend._prompt_ids(llm, [{"role": "user", "content": PROMPT.replace("French", "Spanish")}])
    common = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert common > 2 * CHUNK
    kv.feed(a, len(a) - 5)
    reused = kv.feed(b, len(b) - 5)
    assert kv.reused == common - common % CHUNK and kv.computed == len(b) - kv.reused
    with monkeypatch.context() as m:
        m.setenv("PROMPT_ATTR_LOCAL_PREFIX_REUSE", "0")
        fresh = kv.feed(b, len(b) - 5)
        assert kv.reused == 0
    assert reused.shape == fresh.shape == (5, llm.n_vocab())
    assert abs(reused - fresh).max() <= 1e-4
    kv.feed(b, 3)  # the logits wanted from position 3 on: nothing past it can come from the cache
    assert kv.reused == 0


@pytest.mark.local
def test_the_thread_count_changes_no_number():
    """The thread policy may give any call 1 or 2 threads: answers and scores are the same."""
    from prompt_attr_widget.backends.local import LocalBackend

    messages = [{"role": "user", "content": PROMPT}]
    params = GenerationParams(max_tokens=24, temperature=0.0, seed=42)
    seen = []
    for n in (1, 2):
        backend = LocalBackend(threads=n)
        text = asyncio.run(backend.complete(messages, params)).text
        seen.append((text, asyncio.run(backend.logprob(messages, text)).logprobs))
    assert seen[0][0] == seen[1][0]
    assert seen[0][1] == pytest.approx(seen[1][1], abs=1e-4)



@pytest.mark.local
def test_answers_decoded_together_are_the_answers_decoded_alone(runs_dir, monkeypatch):
    """Greedy answers that arrive together are decoded together (one sequence each, their
    generation steps in one batch): each is the answer it gets alone, also once the
    sequences reuse cached prefixes of different lengths, and a run scored by embedding
    distance (an answer per evaluation) is the same with batches or without."""
    import prompt_attr_widget.backends.local as local_mod
    from prompt_attr_widget.backends.local import LocalBackend

    backend = LocalBackend()
    lines = PROMPT.splitlines(keepends=True)
    prompts = [[{"role": "user", "content": "".join(lines[:i] + lines[i + 1 :])}] for i in range(12)]
    params = GenerationParams(max_tokens=24, temperature=0.0, seed=42)

    async def together(batch):
        return await asyncio.gather(*[backend.complete(m, params) for m in batch])

    batched = [a for start in range(0, 12, 4) for a in asyncio.run(together(prompts[start : start + 4]))]
    assert max(backend._gather.sizes) > 1  # some were decoded together
    alone = [asyncio.run(backend.complete(m, params)) for m in prompts]
    assert [(a.text, a.completion_tokens, a.finish_reason) for a in batched] == [
        (a.text, a.completion_tokens, a.finish_reason) for a in alone]

    options = {"model": "local", "method": "loo", "segment": "heading", "faithfulness": "off", "cache": False,
               "max_tokens": 16, "runs_dir": runs_dir, **EMBEDDING}
    runs = [prompt_attr.attribute(PROMPT, **options)]
    with monkeypatch.context() as m:
        m.setattr(local_mod, "SEQUENCES", 1)
        runs.append(prompt_attr.attribute(PROMPT, **options))
    for run in runs:
        assert run.status == "finished", run.record.reason
    outputs = [{tuple(e.dropped): e.output for e in run.record.evaluations} for run in runs]
    assert runs[0].baseline == runs[1].baseline and outputs[0] == outputs[1]
    assert [s.score for s in runs[0].spans] == pytest.approx([s.score for s in runs[1].spans], abs=1e-4)

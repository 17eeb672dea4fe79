"""Section 8 of bench.py: the embedded model at its limit, against naive forward passes.

A 20-span leave-one-out run (cache off, checks off, model warm) is timed, then
the same masked prompts are decoded the naive way in the same process: a fresh
KV cache each, the whole prompt in one llama-cpp-python `eval`, logits of the
last position only (once for the prompt alone, once with the answer appended,
which is what scoring it needs). Both use the same context and thread count.
The run is repeated with PROMPT_ATTR_LOCAL_PREFIX_REUSE=0 to show what reuse
saves and that it changes no score. Then what decides the design: tokens
decoded per evaluation against the prompt's length and against the least
that exact evaluation must decode (the trie of the masked prompts, see
`lower_bound`), several sequences in one llama.cpp batch against one at a
time (and a run whose answers are decoded together), and one thread
against two, idle and with another busy process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from unittest import mock

SPANS = [
    "You are a support assistant for a small bicycle shop in Utrecht.",
    "The shop repairs city bikes, cargo bikes and electric bikes of most brands.",
    "Opening hours are Tuesday to Saturday from nine in the morning to six in the evening.",
    "A standard service costs forty-five euros and takes about two working days.",
    "Flat tyres are fixed while the customer waits, usually within twenty minutes.",
    "Electric bike batteries are tested for free, but replacements must be ordered.",
    "The shop does not sell second-hand bicycles or rent bikes to tourists.",
    "Customers can book a repair by phone or by visiting the shop in person.",
    "Payment is possible by card or cash, and invoices are sent by e-mail.",
    "Always answer in English, even when the customer writes in Dutch.",
    "Keep every answer under sixty words and avoid technical jargon.",
    "Never promise a repair date before a mechanic has seen the bike.",
    "If a question is about warranty, ask for the original receipt first.",
    "Mention the loyalty card when a customer has visited three times or more.",
    "Parking for cargo bikes is available in the courtyard behind the shop.",
    "The mechanics are Anna, who handles electric bikes, and Joost, who does the rest.",
    "Spare parts for vintage frames can take up to three weeks to arrive.",
    "In winter the shop offers a free light check during the first week of November.",
    "Do not discuss prices of other shops or recommend competitors.",
    "Customer question: my electric bike battery dies after ten kilometres, what should I do?",
]
PROMPT = "\n".join(SPANS)
MAX_TOKENS = 48
GOAL = 0.5  # the run against as many naive passes
SEC = "8 local evaluations"


def measure(report) -> None:
    import prompt_attr
    from prompt_attr_widget.backends import kv as kv_mod
    from prompt_attr_widget.backends import local

    backend = local.LocalBackend()
    llm, kv = backend._decoder()
    threads = backend.threads()
    local._shared_policy.fixed = threads  # the run and the naive passes get the same threads
    try:
        options = dict(model="local", method="loo", segment="sentence", faithfulness="off", cache=False,
                       max_tokens=MAX_TOKENS)
        prompt_attr.attribute("Say hi.", **{**options, "max_tokens": 4})  # warm: model loaded, pages touched
        runs = {}
        for reuse in ("1", "0"):
            with mock.patch.dict(os.environ, {kv_mod.REUSE_ENV: reuse}):
                before, start = list(kv.totals), time.perf_counter()
                run = prompt_attr.attribute(PROMPT, **options)
                runs[reuse] = (run, time.perf_counter() - start, [a - b for a, b in zip(kv.totals, before, strict=False)])
        run, wall, (feeds, computed, reused) = runs["1"]
        prompts = [_ids(backend, llm, run, d) for d in [(), *(tuple(e.dropped) for e in run.record.evaluations)]]
        answer = llm.tokenize(run.baseline.encode("utf-8"), add_bos=False)
        naive = _naive(llm, prompts)
        naive_answer = _naive(llm, [p + answer for p in prompts])
    finally:
        local._shared_policy.fixed = None
    _report_run(report, run, wall, runs["0"], naive, naive_answer, prompts, (feeds, computed, reused), threads)
    _report_bound(report, prompts, answer, kv.chunk)
    _report_batches(report, backend, llm, prompts)
    _report_gathered_run(report, options)
    _report_threads(report, backend, llm, prompts[0])


def _ids(backend, llm, run, dropped) -> list[int]:
    """The tokens of the prompt with these spans deleted, as the engine renders it."""
    from prompt_attr_widget.engine.plan import messages_for
    from prompt_attr_widget.stages.segment import render

    spans = run.record.spans
    keep = [i not in set(dropped or ()) for i in range(len(spans))]
    return backend._prompt_ids(llm, messages_for(render(run.record.prompt, spans, keep), None))


def _naive(llm, prompts) -> float:
    """Seconds for fresh-cache forward passes, last-position logits only (llama-cpp-python's eval)."""
    start = time.perf_counter()
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
    return time.perf_counter() - start


def _report_run(report, run, wall, off, naive, naive_answer, prompts, totals, threads) -> None:
    feeds, computed, reused = totals
    evals = len(run.record.evaluations)
    off_run, off_wall, _ = off
    gap = max(abs(a.score - b.score) for a, b in zip(run.spans, off_run.spans, strict=False))
    report.add(SEC, f"prompt: {len(run.spans)} spans, {sum(map(len, prompts)) / len(prompts):.0f} tokens "
               f"(mean of the {len(prompts)} masked prompts), answer {MAX_TOKENS} tokens max, {threads} threads",
               evals, "evals")
    report.add(SEC, "leave-one-out run, warm (baseline answer + 21 scoring calls)", round(wall, 2), "s")
    report.add(SEC, "evaluations per second", round(evals / wall, 2), "evals/s")
    report.add(SEC, "time per evaluation (run / evaluations)", round(wall / evals, 3), "s")
    report.add(SEC, "naive pass, prompt only (fresh cache, last-position logits)", round(naive / len(prompts), 3), "s")
    ratio = wall / naive
    report.add(SEC, f"run / {len(prompts)} naive passes of the masked prompts", round(ratio, 3), "×",
               goal=f"≤ {GOAL}", ratio=round(ratio, 3))
    report.add(SEC, f"run / {len(prompts)} naive passes of the masked prompts with the answer",
               round(wall / naive_answer, 3), "×")
    report.add(SEC, "the same run with PROMPT_ATTR_LOCAL_PREFIX_REUSE=0", round(off_wall, 2), "s")
    report.add(SEC, "reuse on / off", round(wall / off_wall, 3), "×")
    report.add(SEC, "largest score difference, reuse on against off", f"{gap:.1e}")
    report.add(SEC, f"tokens decoded per scoring or generation call ({feeds} calls), reused from the cache",
               f"{computed / feeds:.0f} decoded, {reused / feeds:.0f} reused")
    report.judge(f"20-span leave-one-out ≤ {GOAL}× the naive passes", ratio <= GOAL,
                 f"{ratio:.3f}× ({wall:.1f} s against {naive:.1f} s); reuse on/off {wall / off_wall:.3f}×, "
                 f"scores equal to {gap:.0e}")


def lower_bound(prompts: list[list[int]], answer: int, chunk: int) -> tuple[int, int]:
    """(tokens exact evaluation must decode, with aligned chunks of `chunk`) for these prompts
    in this order: the first prompt whole, then each after the prefix it shares with the one
    before (tokens past a changed one attend to it, so nothing else can be reused), plus the
    answer for every prompt. No cache layout or batching decodes fewer."""
    exact = aligned = len(prompts[0]) + answer
    for before, ids in zip(prompts, prompts[1:], strict=False):
        common = next((i for i, (a, b) in enumerate(zip(before, ids, strict=False)) if a != b), min(len(before), len(ids)))
        exact += len(ids) - common + answer
        aligned += len(ids) - (common - common % chunk) + answer
    return exact, aligned


def _report_bound(report, prompts, answer, chunk) -> None:
    from prompt_attr_widget.stages.plan import prefix_order

    baseline, masked = prompts[0], prompts[1:]
    naive_tokens = sum(map(len, prompts))
    exact, aligned = lower_bound([baseline, *masked], len(answer), chunk)
    report.add(SEC, "least tokens exact evaluation decodes / naive passes' tokens (prompt only)",
               round(exact / naive_tokens, 3), "×")
    report.add(SEC, f"the same with {chunk}-token aligned chunks", round(aligned / naive_tokens, 3), "×")
    order = prefix_order([tuple(range(i, i + 1)) for i in range(len(masked))], len(masked))
    report.notes.append(
        f"{SEC}: in leave-one-out every token after a deleted span attends to a changed prefix, so each "
        f"masked prompt must decode from its deleted span on; in prefix order ({order[0]} first) that is "
        f"{exact / naive_tokens:.2f}× the naive passes' tokens at best, whatever the cache or batching")


def _report_batches(report, backend, llm, prompts) -> None:
    """Four sequences in one llama.cpp batch, in a context with one KV stream per sequence
    (a non-unified cache: each sequence attends over its own cells), against each sequence
    alone in the backend's own single-sequence context: prompt chunks, then generation
    steps of one token per sequence."""
    import llama_cpp
    import numpy as np
    from llama_cpp import _internals

    n_seq, size, steps = 4, 32, 16
    params = type(llm.context_params).from_buffer_copy(llm.context_params)  # as the backend's (flash attention too)
    params.n_ctx, params.n_seq_max, params.kv_unified = llm.context_params.n_ctx * n_seq, n_seq, False
    params.n_threads = params.n_threads_batch = backend.threads()
    llama_cpp.llama_set_n_threads(llm._ctx.ctx, params.n_threads, params.n_threads)
    multi = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    multi_batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=n_seq, verbose=False)
    seqs = [p[: size * 8] for p in prompts[1 : n_seq + 1]]

    def decode(ctx, batch, entries, every: bool):
        """One batch of (stream, position, token); the logits of every entry, or of the last only."""
        b = batch.batch
        b.n_tokens = len(entries)
        for j, (s, pos, token) in enumerate(entries):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = token, pos, 1, every or j == len(entries) - 1
            b.seq_id[j][0] = s
        ctx.decode(batch)
        rows = len(entries) if every else 1
        return np.ctypeslib.as_array(ctx.get_logits(), shape=(rows * llm.n_vocab(),)).copy().reshape(rows, -1)

    def run(together: bool, in_multi: bool | None = None, only: int = n_seq, again_from: int = 0):
        """(prompt seconds, step seconds, each sequence's step logits) for the first `only` sequences;
        `again_from`: the prompt is decoded, dropped from that position on and decoded again from
        there, as a reused prefix would be."""
        ctx, batch = (multi, multi_batch) if (together if in_multi is None else in_multi) else (llm._ctx, llm._batch)
        groups = [list(range(only))] if together else [[s] for s in range(only)]
        prompt_s = step_s = 0.0
        rows = {}
        for group in groups:
            stream = (lambda s: s) if together else (lambda s: 0)
            start = time.perf_counter()
            for begin in ([0, again_from] if again_from else [0]):
                for s in range(n_seq):  # one by one: with one stream per sequence, seq_rm(-1, ...) clears the first only
                    ctx.kv_cache_seq_rm(s if ctx is multi else 0, begin, -1)
                for at in range(begin, size * 8, size):
                    decode(ctx, batch, [(stream(s), at + i, t) for s in group
                                        for i, t in enumerate(seqs[s][at : at + size])], False)
            prompt_s, start = prompt_s + time.perf_counter() - start, time.perf_counter()
            for step in range(steps):
                out = decode(ctx, batch, [(stream(s), size * 8 + step, 100 + step) for s in group], True)
                rows.update({(s, step): out[k] for k, s in enumerate(group)})
            step_s += time.perf_counter() - start
        return prompt_s, step_s, rows

    try:
        results = {together: run(together) for together in (True, False, True, False)}  # the second of each: warm
        lone = [run(False, in_multi=True, only=1), run(False, only=1)]  # one sequence in either context
        _, _, rows_again = run(True, again_from=2 * size)  # streams that keep a prefix of 64 tokens
    finally:
        multi.close()
        multi_batch.close()
        llm.reset()
        backend._decoder()[1].cached = []  # the backend's own cache was used: nothing in it is reusable
    (p_t, s_t, rows_t), (p_a, s_a, rows_a) = results[True], results[False]
    gap = max(float(abs(rows_t[k] - rows_a[k]).max()) for k in rows_a)
    report.add(SEC, f"{n_seq} sequences in one batch / each alone, {size}-token prompt chunks", round(p_t / p_a, 3), "×")
    report.add(SEC, f"the same for generation steps (one token per sequence; {s_a / steps / n_seq * 1000:.1f} ms "
               f"per step alone)", round(s_t / s_a, 3), "×")
    report.add(SEC, "largest logit difference, batched against alone", f"{gap:.1e}")
    again = max(float(abs(rows_again[k] - rows_a[k]).max()) for k in rows_a)
    report.add(SEC, "the same when the streams keep a 64-token prefix and decode the rest again", f"{again:.1e}")
    (lp_m, ls_m, _), (lp_s, ls_s, _) = lone
    report.add(SEC, f"one sequence alone in the {n_seq}-stream context / in the backend's, prompt and steps",
               f"{lp_m / lp_s:.2f} / {ls_m / ls_s:.2f}", "×")


def _report_gathered_run(report, options) -> None:
    """Where batches pay: a run scored by embedding distance generates an answer per
    evaluation, and answers that arrive together are decoded together (backends/gather.py).
    Each setting runs twice, the second timed: both contexts loaded, their caches warm."""
    import prompt_attr
    from prompt_attr_widget.backends import local

    options = {**options, "scorer": "embedding", "max_tokens": 128}  # the default answer length
    walls, outputs = {}, {}
    for sequences in (local.SEQUENCES, 1, local.SEQUENCES, 1):
        saved, local.SEQUENCES = local.SEQUENCES, sequences
        try:
            start = time.perf_counter()
            run = prompt_attr.attribute(PROMPT, **options)
            walls[sequences] = time.perf_counter() - start
            outputs[sequences] = sorted((tuple(e.dropped), e.output) for e in run.record.evaluations)
        finally:
            local.SEQUENCES = saved
    batched, alone = walls[local.SEQUENCES], walls[1]
    report.add(SEC, f"embedding-scored leave-one-out (an answer of up to 128 tokens per evaluation): answers "
               f"{local.SEQUENCES} at a time / one at a time", round(batched / alone, 3), "×")
    report.add(SEC, "the same answers either way", outputs[local.SEQUENCES] == outputs[1])


def _report_threads(report, backend, llm, ids) -> None:
    """One thread against two, idle and next to one busy process; and what the policy picks."""
    import llama_cpp

    from prompt_attr_widget.backends.threads import machine_cores

    cores = machine_cores()
    counts = sorted({1, cores})
    sample = ids[:128]

    def per_token(n: int) -> float:
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, n, n)
        best = float("inf")
        for _ in range(2):
            llm.reset()
            start = time.perf_counter()
            llm.eval(sample)
            best = min(best, time.perf_counter() - start)
        return best / len(sample) * 1000

    for label in ("idle", "one busy process"):
        hog = None
        if label != "idle":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            figures = {n: per_token(n) for n in counts}
            backend.threads()  # a window with the hog in it
            time.sleep(0.5)
            chosen = backend.threads()
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        text = ", ".join(f"{n} thread{'s' * (n > 1)} {ms:.2f}" for n, ms in figures.items())
        report.add(SEC, f"{label}: ms per token, {text}; the policy picks", chosen, "threads")

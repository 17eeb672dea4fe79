"""The budget against what a server bills, counted on the server's side.

A real server bills the prompt tokens its chat template adds (role markers,
a default system prompt), which the byte bound of the text sent does not
see. tests/fault_server.py bills such tokens on request and lists the usage
of every answer it produced, so these tests compare the budget with what
the server charged, not with what the run believes it spent.
"""

from __future__ import annotations

import random

import pytest
from fault_server import serve

import prompt_attr
from prompt_attr import BudgetRefused, Price

KEY = "sk-test-budget"
PRICE = Price(input=3.0, output=12.0)  # USD per million tokens
EMBED_PRICE = Price(input=0.5)
PROMPT = "Ann. Bob. It is. Dee. Eve. So. Kim. It."


def attribute(server, prompt, runs_dir, **options) -> prompt_attr.Attribution:
    options = {
        "model": "srv", "base_url": server.url, "api_key": KEY, "runs_dir": runs_dir, "cache": False,
        "timeout": 5, "max_retries": 4, "concurrency": 8, "method": "loo", "faithfulness": "off",
        "price": PRICE, "embed_price": EMBED_PRICE, "scorer": "embedding", "max_tokens": 2, **options,
    }
    return prompt_attr.attribute(prompt, **options)


def projection(server, prompt, runs_dir, **options) -> float:
    with pytest.raises(BudgetRefused) as refused:
        attribute(server, prompt, runs_dir, budget=0, **options)
    return refused.value.projected_usd


def billed(server, price: Price = PRICE, embed_price: Price = EMBED_PRICE) -> float:
    """USD the server charged, from the usage of every answer it produced."""
    return server.stats.cost(price, embed_price)


def test_budgets_hold_when_the_server_bills_40_template_tokens_a_call(runs_dir):
    with serve(extra_tokens=40) as server:
        full = attribute(server, PROMPT, runs_dir)
        assert full.status == "finished", full.record.reason
        whole = billed(server)
        projected = projection(server, PROMPT, runs_dir)
        assert projected < whole  # the estimate knows nothing of the template: these budgets start
        over, stopped = [], 0
        for i in range(16):
            budget = projected + (whole - projected) * i / 15 * 1.1
            server.reset()
            run = attribute(server, PROMPT, runs_dir, budget=budget, concurrency=1 + i % 8)
            spent = billed(server)
            if spent > budget + 1e-12:
                over.append((round(budget, 8), round(spent, 8)))
            stopped += run.record.stopped_by == "budget"
        print(f"budget, 40 template tokens a call: 16 budgets, {stopped} stopped mid-run, {len(over)} over")
        assert over == []
        assert stopped >= 8


WORDS = ["It", "Alpha", "beta", "Gamma", "delta", "Epsilon", "zeta", "Theta", "iota", "Kappa", "lambda"]


def test_randomised_server_billed_spend_never_passes_the_budget(runs_dir, monkeypatch):
    """200 runs against a server billing 0-60 template tokens a call, with 10-20% of requests
    answered 503 or 429 (retried), random prices, methods, scorers and concurrency 1-30.

    The projection's refusal is switched off: it estimates, and this is about the guard that
    must hold call by call for any budget, those the refusal would catch included. Budgets are
    drawn around the projection, so most runs are stopped by the budget part-way.
    """
    import prompt_attr_widget.engine.run as engine_run

    rng = random.Random(20261204)
    counts = {"finished": 0, "stopped mid-run": 0, "stopped before any call": 0, "refused": 0, "over the budget": 0}
    worst = 0.0  # the largest share of its budget a run was billed
    faults = requests = 0
    with serve(logprobs=True) as server:
        for i in range(200):
            sentences = rng.randint(2, 12)
            prompt = " ".join(
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) + "." for _ in range(sentences)
            )
            price = Price(input=rng.uniform(0.05, 30), output=rng.uniform(0, 60))
            embed_price = Price(input=rng.uniform(0, 2))
            options = dict(
                price=price, embed_price=embed_price, concurrency=rng.randint(1, 30),
                method=rng.choice(["loo", "hierarchical", "surrogate"]), masks=rng.randint(4, 24),
                scorer=rng.choice(["embedding", "logprob"]), max_tokens=rng.randint(1, 24),
            )
            server.bill(extra_tokens=rng.randint(0, 60))
            server.configure(rate=rng.uniform(0.1, 0.2), kinds=["http_503", "rate_limit"], transient_for=2,
                             seed=i, retry_after_ms=1)
            projected = projection(server, prompt, runs_dir, **options)
            budget = projected * rng.uniform(0.25, 1.6)
            server.reset()
            with monkeypatch.context() as patched:
                patched.setattr(engine_run, "check_projection", lambda *args: None)
                try:
                    run = attribute(server, prompt, runs_dir, budget=budget, **options)
                except BudgetRefused as exc:  # not even the log-probability check fits: nothing asked
                    assert "log-probabilities" in str(exc) and not server.stats.requests
                    counts["refused"] += 1
                    continue
            spent_on_server = billed(server, price, embed_price)
            faults += sum(server.stats.faults.values())
            requests += len(server.stats.requests)
            worst = max(worst, spent_on_server / budget)
            assert run.status in ("finished", "aborted"), run.record.reason
            if spent_on_server > budget + 1e-12:
                counts["over the budget"] += 1
            # everything the server billed is in the run's own account (a failed call counts its worst case)
            assert spent_on_server <= run.record.spend.usd + 1e-12
            if run.status == "finished":
                counts["finished"] += 1
            else:
                assert run.record.stopped_by == "budget", run.record.reason
                counts["stopped mid-run" if run.record.spend.calls else "stopped before any call"] += 1
    print(f"budget, 200 randomised runs on the fault server: {counts}; the most billed was "
          f"{worst:.1%} of a budget; {faults} of {requests} requests answered 503 or 429")
    assert counts["over the budget"] == 0, counts
    assert counts["stopped mid-run"] >= 100, counts


def test_the_log_probability_probe_is_a_budgeted_call(runs_dir):
    # Whether a server offers log-probabilities is asked with a one-token request, billed like any:
    # it is made within the run's budget and counted in its spend.
    with serve(logprobs=True, extra_tokens=40) as server:
        with pytest.raises(BudgetRefused, match="refused"):
            attribute(server, PROMPT, runs_dir, scorer="auto", budget=0)
        assert server.stats.requests == []  # not even the probe was asked
        run = attribute(server, PROMPT, runs_dir, scorer="auto")
        assert run.status == "finished" and run.record.scorer == "logprob"
        assert server.stats.requests[0].path == "/v1/completions"  # the probe, first
        assert run.record.spend.usd == pytest.approx(billed(server), rel=1e-9)
        assert run.record.spend.calls == len(server.stats.billed)  # the probe among them
    # a server without the completions endpoint refuses the probe (404): that costs nothing
    with serve() as server:
        run = attribute(server, PROMPT, runs_dir, scorer="auto")
        assert run.status == "finished" and run.record.scorer == "embedding"
        assert run.record.spend.usd == pytest.approx(billed(server), rel=1e-9)
        assert run.record.spend.calls == len(server.stats.billed) + 1  # the refused probe was a call


def test_template_tokens_billed_per_message_are_bounded_too(runs_dir):
    # a template that adds 30 tokens to each message (a system prompt and the user's): calibrated
    # per message, the budget holds where the bound of the text alone would not
    with serve(extra_tokens_per_message=30) as server:
        options = dict(system="Be brief.", concurrency=6)
        projected = projection(server, PROMPT, runs_dir, **options)
        server.reset()
        run = attribute(server, PROMPT, runs_dir, budget=projected * 1.5, **options)
        chat = [b for b in server.stats.billed if b.path.endswith("/chat/completions")]
        assert run.record.stopped_by == "budget", run.record.reason
        assert min(b.prompt_tokens for b in chat) >= 60  # two messages, 30 tokens each
        assert billed(server) <= projected * 1.5
        assert run.record.spend.usd == pytest.approx(billed(server), rel=1e-9)


def test_broken_answers_asked_again_stay_within_the_budget(runs_dir, monkeypatch):
    """A broken 200 (truncated JSON, an HTML page, no choices) was billed: asking again books
    another call. 40 runs with up to 60 template tokens a call and 60% of a body's first four
    attempts broken, budgets around what they cost: none is billed past its budget."""
    import prompt_attr_widget.engine.evaluate as evaluate
    import prompt_attr_widget.engine.run as engine_run

    monkeypatch.setattr(evaluate, "BROKEN_BACKOFF_S", 0.001)
    rng = random.Random(5)
    over, stopped, worst = [], 0, 0.0
    with serve() as server:
        for i in range(40):
            prompt = " ".join(
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) + "." for _ in range(rng.randint(2, 10))
            )
            server.bill(extra_tokens=rng.randint(0, 60))
            server.configure(rate=0.6, kinds=["truncated_json", "malformed_json", "empty_choices"], seed=i,
                             transient_for=4)
            budget = 0.004 * rng.uniform(0.1, 1)
            server.reset()
            with monkeypatch.context() as patched:
                patched.setattr(engine_run, "check_projection", lambda *args: None)  # the guard, not the estimate
                run = attribute(server, prompt, runs_dir, budget=budget, concurrency=rng.randint(1, 20), max_tokens=8)
            spent = billed(server)
            worst = max(worst, spent / budget)
            if spent > budget + 1e-12:
                over.append((round(budget, 8), round(spent, 8)))
            stopped += run.record.stopped_by == "budget"
            assert spent <= run.record.spend.usd + 1e-12  # every broken attempt is in the run's account
    print(f"budget, broken answers asked again: 40 runs, {stopped} stopped by the budget, {len(over)} over, "
          f"the most billed {worst:.1%} of a budget")
    assert over == []
    assert stopped >= 10

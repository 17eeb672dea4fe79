"""The budget against what a server bills, counted on the server's side.

A real server bills the prompt tokens its chat template adds (role markers,
a default system prompt), which the byte bound of the text sent does not
see. tests/fault_server.py bills such tokens on request and lists the usage
of every answer it produced, so these tests compare the budget with what
the server charged, not with what the run believes it spent.
"""

from __future__ import annotations

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


def billed(server) -> float:
    """USD the server charged, from the usage of every answer it produced."""
    return server.stats.cost(PRICE, EMBED_PRICE)


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

"""Cost guardrail: prices, token bounds, the budget and the pre-run projection."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prompt_attr
from prompt_attr import BudgetRefused, Price, UsageError
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.backends.prices import lookup_price, price_table
from prompt_attr_widget.core.cost import (
    BOUND_CALL_TOKENS,
    BOUND_MESSAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_OVERHEAD_TOKENS,
    bound_tokens,
    call_cost,
    estimate_tokens,
    messages_tokens,
)
from prompt_attr_widget.core.text import usd
from prompt_attr_widget.engine.budget import Budget, check_projection

# --- prices -----------------------------------------------------------------------


def test_lookup_exact_names():
    assert lookup_price("gpt-4o-mini") == Price(input=0.15, output=0.60)
    assert lookup_price("gpt-4o") == Price(input=2.50, output=10.00)
    assert lookup_price("text-embedding-3-small", "embedding") == Price(input=0.02)
    assert lookup_price("text-embedding-3-small") is None  # not a chat model
    assert lookup_price("not-a-model") is None


@pytest.mark.parametrize(
    "dated, family",
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest family wins
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("o1-2024-12-17", "o1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ],
)
def test_lookup_dated_snapshots_match_their_family(dated, family):
    assert lookup_price(dated) == lookup_price(family)
    assert lookup_price(dated) is not None


@pytest.mark.parametrize("other", ["o1-pro", "o3-pro", "gpt-5-pro", "gpt-4o-audio-preview", "gpt-4o-realtime-preview-2024-12-17"])
def test_lookup_other_models_of_a_family_are_not_priced_as_it(other):
    # Regression: any "<family>-..." matched, so o1-pro (10x o1's price) was
    # priced as o1 and a budget would have been enforced with a wrong price.
    assert lookup_price(other) is None


def test_price_table_override(tmp_path, monkeypatch):
    table = tmp_path / "prices.json"
    table.write_text('{"chat": {"my-model": {"input": 1.5, "output": 2.5}}, "embedding": {}}', "utf-8")
    monkeypatch.setenv("PROMPT_ATTR_PRICES", str(table))
    price_table.cache_clear()
    try:
        assert lookup_price("my-model") == Price(input=1.5, output=2.5)
        assert lookup_price("gpt-4o") is None
    finally:
        monkeypatch.delenv("PROMPT_ATTR_PRICES")
        price_table.cache_clear()
    assert lookup_price("gpt-4o") is not None


# --- token counts ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "hello", "héllo", "😀", "中文字符", "e\u0301", "\x00\x1b", "a" * 1000])
def test_bound_is_the_utf8_byte_count(text):
    assert bound_tokens(text) == len(text.encode("utf-8"))
    assert bound_tokens(text) >= len(text)


def test_bound_tolerates_lone_surrogates():
    assert bound_tokens("a\ud800b") == 5


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_property_bound_is_never_below_the_estimate_or_a_word_count(text):
    assert bound_tokens(text) >= len(text.encode("utf-8", "surrogatepass"))
    if text:
        assert bound_tokens(text) >= estimate_tokens(text)
    # every word and every punctuation mark is at least one token in any tokenizer
    import re

    assert bound_tokens(text) >= len(re.findall(r"\w+|[^\w\s]", text))


@pytest.mark.local
def test_bound_covers_a_real_byte_level_bpe_tokenizer():
    import llama_cpp

    from prompt_attr_widget.backends.local import _quiet_stderr, embedded_model_path

    with _quiet_stderr():
        llm = llama_cpp.Llama(model_path=str(embedded_model_path()), vocab_only=True, verbose=False)
    rng = random.Random(7)
    alphabet = "abcXYZ 019.,;!?\n\t\x00\x1b\x7féü€😀中文日本語\u0301\u202e\u3000"
    samples = ["", " ", "\n\n\n", "😀" * 50, "\x00" * 20, "a" * 500]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120))) for _ in range(300)]
    for text in samples:
        real = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        assert bound_tokens(text) >= real, repr(text)


def test_messages_tokens_adds_overheads():
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "héllo"}]
    # the bound: every byte, and a chat template's tokens before any server has answered
    assert messages_tokens(messages, bound=True) == BOUND_CALL_TOKENS + 2 * BOUND_MESSAGE_TOKENS + 4 + 6
    assert messages_tokens(messages, bound=False) == REPLY_OVERHEAD_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 1 + 2
    assert messages_tokens(messages, bound=True) >= messages_tokens(messages, bound=False)


def test_call_cost():
    assert call_cost(None, 100, 100) is None
    assert call_cost(Price(input=2.0, output=8.0), 1_000_000, 500_000) == pytest.approx(6.0)
    assert call_cost(Price(input=1.0), 3) == pytest.approx(3e-6)
    assert call_cost(Price(input=0, output=0), 10**9, 10**9) == 0


# --- budget ------------------------------------------------------------------------------


def test_budget_reserve_and_settle():
    b = Budget(1.0)
    assert b.reserve(0.6)
    assert not b.reserve(0.5)  # 0.6 reserved + 0.5 > 1.0
    assert b.spent == 0
    b.settle(0.6, 0.2)
    assert b.spent == pytest.approx(0.2)
    assert b.reserve(0.8)  # 0.2 + 0.8 == limit is allowed
    assert not b.reserve(0.01)
    b.settle(0.8, 0.8)
    assert b.spent == pytest.approx(1.0)
    assert b.spent_usd == pytest.approx(1.0)
    assert not b.reserve(1e-6)


def test_budget_unknown_prices():
    unlimited = Budget(None)
    assert unlimited.reserve(None)
    unlimited.settle(None, None)
    assert unlimited.unknown and unlimited.spent_usd is None
    limited = Budget(1.0)
    assert not limited.reserve(None)  # an unpriced call can never be proven to fit
    assert Budget(None).reserve(123.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 1)), max_size=40))
def test_property_budget_spent_never_exceeds_limit(limit, calls):
    b = Budget(limit)
    open_reservations = []
    for worst, fraction in calls:
        if b.reserve(worst):
            open_reservations.append((worst, worst * fraction))
        if len(open_reservations) > 3:
            w, actual = open_reservations.pop(0)
            b.settle(w, actual)
        assert b.spent + b._reserved <= limit + 1e-9
    for w, actual in open_reservations:
        b.settle(w, actual)
    assert b.spent <= limit + 1e-9


def test_budget_is_thread_safe():
    b = Budget(1.0)
    granted = []

    def worker():
        for _ in range(2000):
            if b.reserve(0.001):
                granted.append(1)
                b.settle(0.001, 0.001)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) <= 1000 + 1  # float rounding of 1000 x 0.001 may allow one
    assert b.spent <= 1.0 + 1e-9


# --- projection ----------------------------------------------------------------------------


def test_check_projection():
    check_projection(5.0, None, "gpt-4o")  # no budget: never refuses
    check_projection(None, None, "x")
    check_projection(0.5, 0.5, "gpt-4o")  # exactly the budget is fine
    with pytest.raises(BudgetRefused) as info:
        check_projection(0.1366, 0.05, "gpt-4o")
    assert "$0.1366" in str(info.value) and "$0.0500" in str(info.value)
    assert info.value.projected_usd == 0.1366 and info.value.budget_usd == 0.05
    assert info.value.exit_code == 3


def test_refusal_shows_tiny_figures_legibly():
    with pytest.raises(BudgetRefused) as info:
        check_projection(0.000123, 0.0001, "gpt-4o-mini")
    assert "$0.000123" in str(info.value) and "$0.000100" in str(info.value)
    assert usd(None) == "unknown" and usd(0) == "$0.0000" and usd(1.23456) == "$1.2346"


def test_unknown_price_with_budget_asks_for_a_price():
    with pytest.raises(UsageError, match="price") as info:
        check_projection(None, 1.0, "my-server-model")
    assert "my-server-model" in str(info.value)


def test_unknown_price_with_budget_through_attribute(runs_dir):
    backend = FakeBackend()
    backend.info.price = None
    with pytest.raises(UsageError, match=r"price=Price|--price-in"):
        prompt_attr.attribute("Alpha one. Beta two.", backend=backend, runs_dir=runs_dir, budget=1.0)
    assert backend.calls == 0
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    # an OpenAI-compatible server has no known price either; nothing is called (the embedding
    # scorer needs no log-probability probe)
    with pytest.raises(UsageError, match="price"):
        prompt_attr.attribute(
            "Alpha one. Beta two.", model="x", base_url="http://127.0.0.1:9/v1", runs_dir=runs_dir, budget=1.0,
            scorer="embedding",
        )
    # with an explicit price the same server passes the check (and then fails to connect)
    a = prompt_attr.attribute(
        "Alpha one. Beta two.",
        model="x",
        base_url="http://127.0.0.1:9/v1",
        runs_dir=runs_dir,
        budget=1.0,
        price=Price(input=1, output=1),
        embed_price=Price(input=1),
        timeout=2,
        max_retries=0,
        scorer="embedding",
    )
    assert a.status == "failed"


# --- the budget end to end, randomised ---------------------------------------------------------


class BillingBackend(FakeBackend):
    """A FakeBackend with random latency that bills every answer it returns."""

    def __init__(self, rng: random.Random, **kw):
        super().__init__(**kw)
        self.rng = rng
        self.billed = 0.0

    async def complete(self, messages, params):
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        c = await super().complete(messages, params)
        self.billed += call_cost(self.info.price, c.prompt_tokens, c.completion_tokens)
        return c

    async def embed(self, texts):
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        e = await super().embed(texts)
        self.billed += call_cost(self.info.embed_price, e.prompt_tokens)
        return e

    async def logprob(self, messages, continuation):
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        scored = await super().logprob(messages, continuation)
        self.billed += call_cost(self.info.price, scored.prompt_tokens, 1)
        return scored


WORDS = ["It", "Alpha", "beta", "Gamma", "delta", "Epsilon", "zeta", "Theta", "iota", "Kappa", "lambda"]


def test_randomised_spend_never_passes_the_budget(runs_dir):
    rng = random.Random(20261123)
    outcomes = {"finished": 0, "aborted": 0, "refused": 0}
    for _ in range(200):
        sentences = rng.randint(2, 14)
        prompt = " ".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "." for _ in range(sentences)
        )
        price = Price(input=rng.uniform(0.01, 60), output=rng.uniform(0, 120))
        embed_price = Price(input=rng.uniform(0, 5))
        options = dict(
            runs_dir=runs_dir,
            cache=False,
            concurrency=rng.randint(1, 8),
            max_tokens=rng.randint(1, 24),
            method=rng.choice(["loo", "hierarchical", "surrogate"]),
            masks=rng.randint(4, 24),
            faithfulness="off",  # its deletions often reuse attribution ones, loosening the projection
        )
        logprobs = rng.random() < 0.4  # the log-probability scorer's calls are billed too
        try:
            prompt_attr.attribute(
                prompt, backend=FakeBackend(price=price, embed_price=embed_price, logprobs=logprobs), budget=0, **options
            )
            pytest.fail("a zero budget must be refused")
        except BudgetRefused as exc:
            projected = exc.projected_usd
        budget = projected * rng.uniform(0.95, 1.25)
        backend = BillingBackend(random.Random(rng.random()), price=price, embed_price=embed_price, logprobs=logprobs)
        try:
            result = prompt_attr.attribute(prompt, backend=backend, budget=budget, **options)
        except BudgetRefused:
            assert budget < projected
            assert backend.calls == 0
            outcomes["refused"] += 1
            continue
        spent = result.record.spend.usd
        assert spent is not None
        assert spent <= budget + 1e-12, (spent, budget)
        assert backend.billed <= budget + 1e-12
        # what the backend billed is all accounted for (nothing paid was left out)
        assert backend.billed <= spent + 1e-12
        assert result.status in ("finished", "aborted"), result.record.reason
        if result.status == "finished":
            assert spent == pytest.approx(backend.billed, rel=1e-9, abs=1e-15)
        else:
            assert "budget" in result.record.reason
        outcomes[result.status] += 1
    # the random budgets must exercise every ending
    # stops mid-run are the rare ending (the projection refuses most budgets that could not
    # cover a run), but they must occur
    print(f"budget: 200 randomised runs, {outcomes}; spend never passed the budget")
    assert outcomes["finished"] >= 5 and outcomes["refused"] >= 5 and outcomes["aborted"] >= 2, outcomes

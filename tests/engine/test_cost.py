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
    CALIBRATION_FACTOR,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_OVERHEAD_TOKENS,
    Request,
    bound_tokens,
    call_cost,
    estimate_tokens,
    messages_tokens,
)
from prompt_attr_widget.core.text import usd
from prompt_attr_widget.engine.budget import Budget, Calibration, check_projection

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


# --- calibration: the bound of a request from what the server billed -----------------------


USER = ("user",)


def chat(content_bytes: int, form=USER, max_output: int = 16) -> Request:
    return Request("chat", form, content_bytes, max_output)


def test_calibration_is_conservative_before_any_response():
    c = Calibration()
    assert not c.answered("chat")
    assert c.tokens(chat(16)) == (16 + BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS, 16)
    # llama.cpp's server billed 44-46 prompt tokens for a 16-byte prompt: the conservative bound covers it
    assert c.tokens(chat(16))[0] >= 46
    two = Request("chat", ("system", "user"), 30, 8)
    assert c.tokens(two) == (30 + BOUND_CALL_TOKENS + 2 * BOUND_MESSAGE_TOKENS, 8)
    assert c.tokens(Request("embed", ("input",), 5, 0)) == (5 + BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS, 0)


def test_calibration_grows_with_the_overhead_observed():
    c = Calibration()
    c.observe(chat(16), 16 + 150, 10)  # a template of 150 tokens, beyond the conservative overhead
    assert c.answered("chat") and not c.answered("embed")
    prompt, _ = c.tokens(chat(40))
    assert prompt >= 40 + 150 > 40 + BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS
    c.observe(chat(16), 16 + 300, 10)
    assert c.tokens(chat(40))[0] >= 40 + 300 > prompt
    # per message: a request of another form gets the largest overhead a message was seen to add, and a margin
    assert c.tokens(Request("chat", ("system", "user"), 40, 16))[0] >= 40 + 2 * 300 * CALIBRATION_FACTOR
    # completions: a server that bills more than max_tokens raises the output bound from then on
    assert c.tokens(chat(40, max_output=16))[1] == 16
    c.observe(chat(16, max_output=16), 60, 20)
    assert c.tokens(chat(40, max_output=16))[1] >= 16 + 4 * CALIBRATION_FACTOR
    # kinds are calibrated apart: embeddings know nothing yet
    assert c.tokens(Request("embed", ("input",), 5, 0))[0] == 5 + BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS


def test_calibration_lowers_a_bound_only_to_what_a_response_proves():
    c = Calibration()
    # a long prompt billed far fewer tokens than its bytes shows no overhead: the bound stays conservative
    c.observe(chat(2000), 600, 5)
    assert c.tokens(chat(10))[0] == 10 + BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS
    # a response billed 20 tokens in all proves its template adds at most 20 (its text was 0 or more)
    c.observe(chat(12), 20, 5)
    assert c.tokens(chat(10))[0] == 10 + 20
    assert c.tokens(chat(12))[0] >= 20  # never below what the same request was billed
    # another form has no such proof
    assert c.tokens(Request("chat", ("system", "user"), 10, 16))[0] == 10 + BOUND_CALL_TOKENS + 2 * BOUND_MESSAGE_TOKENS


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([USER, ("system", "user")]), st.integers(0, 4000), st.integers(1, 6000),
                  st.integers(0, 64)),
        min_size=1, max_size=12,
    ),
    st.integers(0, 4000),
)
def test_property_calibration_never_goes_below_what_was_billed(observed, more_bytes):
    c = Calibration()
    for seen, (form, content, billed, output) in enumerate(observed, 1):
        c.observe(chat(content, form), billed, output)
        # a comparable request (same kind and form, no fewer bytes) is never bounded below its bill,
        # whatever was observed since
        for form_, content_, billed_, output_ in observed[:seen]:
            prompt, out = c.tokens(chat(content_ + more_bytes, form_))
            assert prompt >= billed_ and out >= output_


class TemplateBilling(FakeBackend):
    """A FakeBackend billing `extra` prompt tokens a call (a chat template), and counting what it billed."""

    def __init__(self, extra: int, **kw):
        super().__init__(**kw)
        self.extra = extra
        self.billed = 0.0
        self.in_flight = 0
        self.peak_before_first_answer = 0
        self.answered = False

    async def complete(self, messages, params):
        self.in_flight += 1
        if not self.answered:
            self.peak_before_first_answer = max(self.peak_before_first_answer, self.in_flight)
        await asyncio.sleep(0.001)
        c = await super().complete(messages, params)
        c.prompt_tokens += self.extra
        self.billed += call_cost(self.info.price, c.prompt_tokens, c.completion_tokens)
        self.in_flight -= 1
        self.answered = True
        return c


def _many_calls(backend, budget: float, calls: int = 60, concurrency: int = 30):
    """`calls` distinct short chat requests at once through one evaluator; how many were made."""
    from prompt_attr_widget.backends.base import GenerationParams
    from prompt_attr_widget.engine.cache import CallCache
    from prompt_attr_widget.engine.evaluate import BudgetExhausted, Evaluator

    evaluator = Evaluator(backend, CallCache(None), Budget(budget), GenerationParams(max_tokens=4),
                          concurrency=concurrency, rpm=None)

    async def one(i):
        try:
            await evaluator.complete([{"role": "user", "content": f"Hi {i}"}])
            return 1
        except BudgetExhausted:
            return 0

    async def go():
        return sum(await asyncio.gather(*(one(i) for i in range(calls))))

    return asyncio.run(go()), evaluator


@pytest.mark.parametrize("extra", [0, 40, 60])
def test_concurrent_calls_cannot_pass_the_budget_before_the_first_calibration(extra):
    # 30 calls start at once, each a 4-byte prompt billed `extra` template tokens: all are booked
    # before any has answered, so the bound before the first response must hold on its own
    price = Price(input=10, output=10)
    one_call = call_cost(price, 1 + extra, 4)
    budget = one_call * 20.5
    backend = TemplateBilling(extra, price=price)
    made, evaluator = _many_calls(backend, budget)
    assert backend.billed <= budget + 1e-12, (backend.billed, budget)
    assert evaluator.budget.spent == pytest.approx(backend.billed)
    assert made >= 5  # the budget was used, not refused at once


def test_a_server_billing_beyond_the_conservative_bound_passes_it_with_one_call_at_most():
    # 300 template tokens a call is beyond what the conservative bound assumes: the first request
    # of a kind goes alone, so no more than it can pass its reservation, and its usage then
    # calibrates every request after it
    price = Price(input=10, output=10)
    backend = TemplateBilling(300, price=price)
    budget = call_cost(price, 310, 4) * 10.5
    made, evaluator = _many_calls(backend, budget)
    assert backend.peak_before_first_answer == 1
    assert backend.billed <= budget + 1e-12, (backend.billed, budget)
    assert 5 <= made <= 10


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
            behaviour_checks=rng.choice([0, 0, 3]),  # the same: its answers are often the deletions' own
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

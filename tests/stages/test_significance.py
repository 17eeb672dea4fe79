"""Honest significance on the fake backend: the calibrated null and the behavioural check.

The fake model with `jitter` moves every answer word's log-probability a
little with any change to the prompt, so deleting an irrelevant sentence has
a small, real effect, as on a real model; the planted sentence holds the
target's word, whose deletion drops it by about 3 nats.
"""

from __future__ import annotations

import random

import pytest

import prompt_attr
from prompt_attr_widget.backends.base import Completion
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.schema import SpanScore
from prompt_attr_widget.stages.behaviour import (
    Check,
    difference,
    form,
    judge,
    language,
    next_checks,
)
from prompt_attr_widget.stages.noise import NULL_FPR, calibrated_bound, placebo_prompt, t_quantile
from prompt_attr_widget.stages.segment import segment
from prompt_attr_widget.views.export import to_csv
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.terminal import top_table
from prompt_attr_widget.views.widget import AttributionWidget

WORDS = ["river", "stone", "quiet", "paper", "window", "garden", "lamp", "table", "morning", "yellow", "bread", "kettle"]
JITTER = 0.3


def filler(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "."


def planted_prompt(rng: random.Random) -> tuple[str, int]:
    """Lowercase filler sentences (the fake answers with capitalised words only) and one that
    plants the answer's word; the index of that one."""
    sentences = [filler(rng) for _ in range(rng.randint(5, 9))]
    at = rng.randrange(len(sentences))
    sentences.insert(at, "the code is Zorblax.")
    return " ".join(sentences), at


def run(prompt: str, runs_dir, backend=None, **options):
    options = {"method": "loo", "cache": False, "faithfulness": "off", "segment": "sentence", **options}
    return prompt_attr.attribute(prompt, backend=backend or FakeBackend(logprobs=True, jitter=JITTER),
                                 runs_dir=runs_dir, **options)


def test_the_t_quantile_and_the_bound():
    for dof, exact in ((4, 2.776), (8, 2.306), (16, 2.120), (64, 1.998)):
        assert t_quantile(0.975, dof) == pytest.approx(exact, rel=3e-3)
    assert calibrated_bound([0.1, -0.1, 0.1]) is None  # too few to estimate a spread
    assert calibrated_bound([0.1, -0.1, 0.1, -0.1]) == pytest.approx(t_quantile(0.975, 4) * 0.1)


def test_placebos_are_distinct_neutral_sentences_in_the_prompts_own_gaps():
    prompt = "Alpha one. Beta two.\nGamma three. Delta four."
    spans = segment(prompt, "sentence")
    copies = [placebo_prompt(prompt, spans, k, 42, "Zorblax") for k in range(8)]
    assert len(set(copies)) == 8 and all(c != prompt for c in copies)
    for c in copies:  # the prompt is all there, in order, and one sentence more
        assert len(segment(c, "sentence")) == len(spans) + 1
        rest = iter(c)
        assert all(ch in rest for ch in prompt)
    assert copies == [placebo_prompt(prompt, spans, k, 42, "Zorblax") for k in range(8)]  # seeded


def test_the_calibrated_floor_rejects_irrelevant_deletions_at_the_stated_rate_and_keeps_planted_ones(runs_dir):
    rng = random.Random(20261204)
    irrelevant, passed_two_sided, passed, kept, runs = 0, 0, 0, 0, 150
    uncalibrated = 0
    for _ in range(runs):
        prompt, culprit = planted_prompt(rng)
        a = run(prompt, runs_dir, target="Zorblax", behaviour_checks=0)
        noise = a.record.noise
        assert len(noise.placebo) == 8 and noise.fpr == NULL_FPR and noise.floor >= noise.calibrated
        for s in a.record.attribution:
            if s.index == culprit:
                kept += bool(s.significant)
                continue
            irrelevant += 1
            passed_two_sided += abs(s.score) > noise.floor
            passed += bool(s.significant)
            uncalibrated += s.score > noise.min_effect
    rate = passed_two_sided / irrelevant
    # the stated rate is for the magnitude (two-sided); the test of a score is one-sided, so lower
    assert 0.025 <= rate <= 0.075, (rate, irrelevant)
    assert passed / irrelevant <= NULL_FPR, passed / irrelevant
    # the planted sentence is found (its 3 nats against a noise of about 0.4 miss about once in 150)
    assert kept >= runs - 3, kept
    print(f"irrelevant deletions past the floor: {rate:.3f} (magnitude), {passed / irrelevant:.3f} "
          f"(flagged) of {irrelevant}; planted kept {kept}/{runs}; min_effect alone {uncalibrated / irrelevant:.2f}")
    assert uncalibrated / irrelevant > 0.3  # what the minimum effect alone would have flagged


def test_turning_the_calibration_off_keeps_the_old_floor(runs_dir):
    prompt, _ = planted_prompt(random.Random(1))
    a = run(prompt, runs_dir, target="Zorblax", null_samples=0, behaviour_checks=0)
    assert a.record.noise.placebo == [] and a.record.noise.calibrated is None
    assert a.record.noise.floor == a.record.noise.min_effect
    assert not any(e.purpose == "placebo" for e in a.record.evaluations)


class SameAnswer(FakeBackend):
    """A model that always says the same thing: every deletion moves its probability only."""

    async def complete(self, messages, params):
        self.calls += 1
        return Completion("The code is Zorblax.", prompt_tokens=20, completion_tokens=5, finish_reason="stop")


def test_a_span_that_moves_the_probability_only_is_not_significant_and_every_view_says_so(runs_dir):
    prompt = "It is calm. The code is Zorblax. It is late."
    backend = SameAnswer(logprobs=True)
    a = run(prompt, runs_dir, backend=backend, target="Zorblax")
    s = a.record.attribution[1]
    assert s.score > a.record.noise.floor  # far above the floor...
    assert s.behaviour == "probability" and s.significant is False  # ...yet the answer is the same
    behaviour = [e for e in a.record.evaluations if e.purpose == "behaviour"]
    assert [e.dropped for e in behaviour] == [[1]] and backend.calls == 2  # the baseline and one check
    assert "prob. only" in top_table(a.record)
    assert "moves its probability only" in heatmap_html(a.record)
    assert "probability" in to_csv(a.record, "spans")
    w = AttributionWidget(a.record)
    assert w.verdicts[1].startswith("moves its probability only") and w.muted[1] is True
    assert any("1 moves its probability only" in n for n in a.notes())
    off = run(prompt, runs_dir, backend=SameAnswer(logprobs=True), target="Zorblax", behaviour_checks=0)
    assert off.record.attribution[1].significant is True and off.record.attribution[1].behaviour is None
    assert not any(e.purpose == "behaviour" for e in off.record.evaluations)


def test_a_fact_stated_twice_changes_the_answer_when_both_copies_go(runs_dir):
    prompt = "The code is Zorblax. It is calm. it is late. Again, the code is Zorblax. What is the code?"
    a = run(prompt, runs_dir, backend=FakeBackend(logprobs=True), target="Zorblax", method="surrogate")
    by_index = {s.index: s for s in a.record.attribution}
    assert by_index[0].behaviour == by_index[3].behaviour == "changes"
    assert "together with span 3" in by_index[0].behaviour_note
    behaviour = [sorted(e.dropped) for e in a.record.evaluations if e.purpose == "behaviour"]
    assert len(behaviour) <= 3 and [0, 3] in behaviour  # the two alone, then together
    assert by_index[0].significant and by_index[3].significant


def test_a_copy_under_the_floor_is_checked_with_the_one_above_it():
    """Deleting one copy of a fact stated twice moves the answer a little: the copy that passes
    the floor, checked alone, changes nothing, so it is deleted together with the likeliest
    other copy, the best span under the floor that still beats the placebo bound."""
    scores = [SpanScore(index=i, score=v, group=(i, i + 1), significant=v > 0.1)
              for i, v in enumerate([0.5, 0.01, 0.06, 0.08, 0.0])]
    base, gone = "The code is Zorblax.", "I do not know."
    assert next_checks(scores, 3, 0, partner_floor=0.03) == [(0,)]
    alone = judge(scores, [Check((0,), base)], base, "Zorblax")
    assert alone[0].behaviour == "probability" and not alone[0].significant
    assert next_checks(alone, 3, 1, partner_floor=0.03) == [(0, 3)]
    assert next_checks(alone, 3, 1, partner_floor=0.09) == []  # no span under the floor beats the bound
    both = judge(scores, [Check((0,), base), Check((0, 3), gone)], base, "Zorblax")
    assert [s.significant for s in both] == [True, False, False, True, False]
    assert both[3].behaviour == "changes" and both[3].behaviour_note == "together with span 0: the target is gone"
    assert both[0].behaviour_note == "together with span 3: the target is gone"
    same = judge(scores, [Check((0,), base), Check((0, 3), base)], base, "Zorblax")  # no change together
    assert [s.significant for s in same] == [False] * 5 and same[3].behaviour is None


def test_the_check_compares_what_the_model_does():
    assert difference("The capital is Paris.", "It is Paris, of course.", "Paris") is None
    assert difference("The capital is Paris.", "I do not know.", "Paris") == "the target is gone"
    assert language("Le chat est sur la table et il dort.") == "fr" and language("The cat is on the table.") == "en"
    assert difference("The cat is on the table.", "Le chat est sur la table et il dort.", None).startswith(
        "the language changes (en to fr)")
    assert form('{"a": 1}') == "json" and form("1. one\n2. two") == "list" and form("Just prose.") == "prose"
    assert difference("Just prose here.", "- one\n- two", None).startswith("the format changes")
    assert difference("Hello there. More.", "Hello there. Other.", None) is None  # the first sentence holds
    assert difference("Hello there.", "Goodbye now.", None) == "the first sentence changes"
    # on a backend whose answers vary, a change the repeats already show is no evidence
    assert difference("Hello there friend.", "Hello there pal.", None, wobble=0.4) is None

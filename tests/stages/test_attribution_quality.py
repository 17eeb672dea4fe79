"""Faithful attribution on the fake backend: scorers, targets, the surrogate, noise, checks.

The fake model answers with the prompt's capitalised words; with
`logprobs=True` an answer word is likely exactly when the prompt still
contains it. So a fact stated twice survives either deletion alone, which
leave-one-out cannot see and random masks can.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget.backends.base import TokenLogprobs
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli_main
from prompt_attr_widget.core.events import Estimate, Evaluated
from prompt_attr_widget.stages import surrogate
from prompt_attr_widget.stages.faithfulness import spearman
from prompt_attr_widget.stages.plan import random_masks
from prompt_attr_widget.stages.score import resolve_target, target_lost
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.terminal import top_table

TWICE = (
    "Our office is in the city.\n"
    "The team meets in Lyon every week.\n"
    "We like coffee.\n"
    "The headquarters are in Lyon too.\n"
    "Lunch is at noon.\n"
    "Parking is free on weekdays."
)


def logprob_fake(**kw) -> FakeBackend:
    return FakeBackend(logprobs=True, **kw)


def run(prompt, runs_dir, backend=None, **kw):
    kw.setdefault("segment", "line")
    kw.setdefault("cache", False)
    return prompt_attr.attribute(prompt, backend=backend or logprob_fake(), runs_dir=runs_dir, **kw)


def ranked(a) -> list[int]:
    return [s.index for s in a.top(len(a.spans))]


# --- scorers -------------------------------------------------------------------------------------


def test_auto_scorer_picks_logprob_where_offered(runs_dir):
    assert run(TWICE, runs_dir).record.scorer == "logprob"
    a = run(TWICE, runs_dir, backend=FakeBackend())
    assert a.record.scorer == "embedding" and a.record.score_unit == "embedding distance (0-1)"
    b = run(TWICE, runs_dir, backend=FakeBackend(), target="Lyon")
    assert b.record.scorer == "target_overlap"
    c = run(TWICE, runs_dir, scorer="embedding")
    assert c.record.scorer == "embedding"


def test_logprob_scorer_on_a_black_box_is_refused_before_any_call(runs_dir):
    backend = FakeBackend()
    with pytest.raises(UsageError, match="cannot score a given answer's log-probability.*--scorer embedding"):
        run(TWICE, runs_dir, backend=backend, scorer="logprob")
    assert backend.calls == 0 and prompt_attr.list_runs(runs_dir) == []


def test_logprob_scorer_regenerates_nothing(runs_dir):
    backend = logprob_fake()
    a = run(TWICE, runs_dir, backend=backend, method="loo", faithfulness="off", behaviour_checks=0)
    assert backend.calls == 1  # the baseline answer only (the behavioural check generates: off here)
    assert backend.logprob_calls == 1 + len(a.spans) + 8  # the baseline, each span, the 8 placebos
    assert all(e.output is None and e.target_logprob is not None for e in a.record.evaluations)
    assert a.record.baseline.output == "Our The Lyon The Lyon Lunch Parking"


# --- targets -------------------------------------------------------------------------------------


PLANTED = "It is a calm day.\nThe meeting is in Zurich.\nWe like tea.\nThe Weather Is Sunny."


@pytest.mark.parametrize("backend_factory", [logprob_fake, FakeBackend], ids=["logprob", "black-box"])
def test_target_attribution_finds_the_span_behind_one_word(runs_dir, backend_factory):
    a = run(PLANTED, runs_dir, backend=backend_factory(), target="Zurich", method="loo")
    assert a.record.target.text == "Zurich"
    assert a.record.baseline.output[a.record.target.start : a.record.target.end] == "Zurich"
    assert ranked(a)[0] == 1 and a.spans[1].significant
    # the sunny line changes the whole answer, but not the target: it is not the culprit here
    assert not a.spans[3].significant
    whole = run(PLANTED, runs_dir, backend=backend_factory(), method="loo")
    assert whole.spans[3].significant  # without a target it is part of what the answer says


def test_target_as_a_character_range(runs_dir):
    a = run(PLANTED, runs_dir, method="loo")
    answer = a.baseline
    start = answer.index("Zurich")
    b = run(PLANTED, runs_dir, method="loo", target=(start, start + 6))
    assert b.record.target.text == "Zurich" and ranked(b)[0] == 1


def test_target_missing_from_the_answer_fails_clearly_with_the_baseline_saved(runs_dir):
    a = run(PLANTED, runs_dir, target="Lyon")
    assert a.status == "failed"
    assert "target 'Lyon' does not occur in the baseline answer" in a.record.reason
    assert a.record.baseline is not None and a.record.evaluations == []
    assert prompt_attr.load_run(a.run_id, runs_dir).record.reason == a.record.reason


def test_resolve_target_and_overlap_scores():
    assert resolve_target("The capital is Lyon.", "lyon").start == 15
    assert resolve_target("abc", (0, 2)).text == "ab"
    assert resolve_target("abc", None) is None
    with pytest.raises(UsageError, match="outside the baseline answer"):
        resolve_target("abc", (1, 9))
    assert target_lost("Lyon", "The capital is lyon!") == 0.0
    assert target_lost("Lyon France", "Paris, France") == 0.5
    assert target_lost("a b c", "c b a") == pytest.approx(2 / 3)  # order matters
    assert target_lost("?!", "why?!") == 0.0 and target_lost("?!", "no") == 1.0


def test_token_logprobs_select_the_target_tokens():
    t = TokenLogprobs(logprobs=[-1.0, -2.0, -3.0], offsets=[0, 4, 10], length=14)
    assert t.mean_over(4, 9) == -2.0  # only the token covering those characters
    assert t.mean_over(0, 14) == -2.0
    assert t.mean_over(8, 12) == -2.5  # tokens overlapping the range
    assert TokenLogprobs([], [], 0).mean_over(0, 1) is None


def test_config_rejects_bad_targets():
    for bad in ("", "   ", (5, 2), (-1, 3)):
        with pytest.raises(UsageError, match="target"):
            prompt_attr.AttributionConfig.build(target=bad)


# --- the surrogate ---------------------------------------------------------------------------------


def test_surrogate_ranks_both_copies_of_a_fact_stated_twice_where_loo_does_not(runs_dir):
    loo = run(TWICE, runs_dir, method="loo", target="Lyon")
    sur = run(TWICE, runs_dir, method="surrogate", target="Lyon")
    copies = {1, 3}
    assert all(loo.spans[i].score == 0 and not loo.spans[i].significant for i in copies)
    assert set(ranked(sur)[:2]) == copies
    assert all(sur.spans[i].significant for i in copies)
    assert not any(sur.spans[i].significant for i in set(range(len(sur.spans))) - copies)
    fit = sur.record.surrogate
    assert fit.keep_prob == 0.5 and 4 <= fit.masks <= 32 and fit.bootstrap == 100
    assert all(s.stderr is not None and s.stderr >= 0 for s in sur.spans)
    # deleting the two copies together is what the check measures
    assert sur.record.faithfulness.top_k == [1, 3] and sur.record.faithfulness.top_k_score == pytest.approx(2.95)


def test_surrogate_fit_recovers_planted_linear_weights():
    rng = np.random.default_rng(0)
    x = (rng.random((64, 10)) < 0.5).astype(float)
    true = np.array([0, 3.0, 0, 0, 1.5, 0, 0, 0, 0, 0])
    y = 0.2 + x @ true + rng.normal(0, 0.05, 64)
    fit = surrogate.fit(x, y, seed=1)
    assert np.allclose(fit.weights, true, atol=0.1)
    assert fit.intercept == pytest.approx(0.2, abs=0.1) and fit.r2 > 0.99
    assert (fit.stderr < 0.1).all()
    # a span never deleted carries no information: weight 0, no standard error
    x[:, 7] = 0
    fit = surrogate.fit(x, x @ true, seed=1)
    assert fit.weights[7] == 0 and np.isnan(fit.stderr[7])


def test_same_seed_same_masks_same_attribution(runs_dir):
    assert random_masks(8, 16, 0.5, 42) == random_masks(8, 16, 0.5, 42)
    assert random_masks(8, 64, 0.5, 42)[:16] == random_masks(8, 16, 0.5, 42)  # 64 masks extend 16
    assert random_masks(8, 16, 0.5, 42) != random_masks(8, 16, 0.5, 43)
    a = run(TWICE, runs_dir, method="surrogate", target="Lyon")
    b = run(TWICE, runs_dir, method="surrogate", target="Lyon")
    assert a.run_id != b.run_id
    assert a.record.attribution == b.record.attribution
    assert sorted(map(tuple, (e.dropped for e in a.record.evaluations))) == sorted(
        map(tuple, (e.dropped for e in b.record.evaluations))
    )
    c = run(TWICE, runs_dir, method="surrogate", target="Lyon", seed=7)
    assert c.record.attribution != a.record.attribution


def test_surrogate_estimates_arrive_while_masks_do(runs_dir):
    seen = []
    run(TWICE + "\nMore filler here.\nAnd more filler.", runs_dir, method="surrogate", masks=64, on_event=seen.append)
    evaluated = [i for i, e in enumerate(seen) if isinstance(e, Evaluated)]
    estimates = [i for i, e in enumerate(seen) if isinstance(e, Estimate)]
    assert len(estimates) >= 3 and estimates[0] < evaluated[-1]  # the heat-map fills in live


def test_a_surrogate_run_stopped_midway_keeps_a_fitted_attribution(runs_dir):
    seen = []

    def stop_after_12(event):
        seen.append(event)
        if sum(isinstance(e, Evaluated) and e.evaluation.purpose == "attribution" for e in seen) == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(TWICE, runs_dir, method="surrogate", target="Lyon", on_event=stop_after_12)
    saved = prompt_attr.load_run("latest", runs_dir)
    # the 12 streamed, and any answers already back when the stop came (paid for, so kept)
    attribution = [e for e in saved.record.evaluations if e.purpose == "attribution"]
    assert saved.status == "aborted" and 12 <= len(attribution) < 32
    assert len(saved.record.attribution) == len(saved.spans)
    assert saved.record.surrogate is not None and saved.record.surrogate.masks <= len(saved.record.evaluations)


# --- noise ---------------------------------------------------------------------------------------


class NoisyFake(FakeBackend):
    """A remote-like model whose answers vary a little from call to call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.info.backend = "noisy"
        self.rng = random.Random(3)

    async def complete(self, messages, params):
        out = await super().complete(messages, params)
        out.text += " " + self.rng.choice(["Indeed", "Surely", "Well", "Yes", "Right"])
        return out


def test_noise_floor_comes_from_repeated_baselines_on_remote_backends(runs_dir):
    prompt = "It is calm.\nThe Zebra Plays Tonight.\nIt is late.\nWe like tea."
    default = run(prompt, runs_dir, backend=NoisyFake(), method="loo")
    assert default.record.noise.repeats == 3 and len(default.record.noise.samples) == 3  # every pair of 3
    assert [e.purpose for e in default.record.evaluations].count("noise") == 2
    # five answers to the same prompt (ten pairs) see this backend's whole wobble
    a = run(prompt, runs_dir, backend=NoisyFake(), method="loo", noise_repeats=5)
    noise = a.record.noise
    assert noise.repeats == 5 and len(noise.samples) == 10
    assert noise.floor == max([noise.min_effect, *noise.samples, noise.calibrated]) and noise.floor > noise.min_effect
    assert len(noise.placebo) == 8  # placebos see the wobble too: it is part of what they measure
    # only the culprit rises above the wobble of a repeated answer
    assert [s.index for s in a.spans if s.significant] == [1]
    assert all(a.spans[i].score <= noise.floor for i in (0, 2, 3))
    # noise evaluations never feed the estimate
    assert {s.evaluation for s in a.record.attribution}.isdisjoint(
        {e.id for e in a.record.evaluations if e.purpose != "attribution"}
    )
    one = run(prompt, runs_dir, backend=NoisyFake(), method="loo", noise_repeats=1)
    assert one.record.noise.samples == [] and one.record.noise.floor == one.record.noise.calibrated
    assert one.record.noise.floor > one.record.noise.min_effect  # the placebos still see the wobble
    off = run(prompt, runs_dir, backend=NoisyFake(), method="loo", noise_repeats=1, null_samples=0)
    assert off.record.noise.floor == off.record.noise.min_effect and off.record.noise.calibrated is None


def test_deterministic_backends_do_not_repeat_the_baseline(runs_dir):
    backend = logprob_fake()
    a = run(TWICE, runs_dir, backend=backend, method="loo", faithfulness="off", behaviour_checks=0)
    assert a.record.noise.repeats == 1 and backend.calls == 1
    assert a.record.noise.floor == 0.1  # the minimum effect: placebo deletions move nothing on this model


@pytest.mark.parametrize("method", ["loo", "hierarchical", "surrogate"])
def test_null_item_comes_out_not_significant(runs_dir, method):
    # The answer word comes from the system message: no span of the prompt matters.
    prompt = "\n".join(f"filler line number {i} about nothing much." for i in range(14))
    a = run(prompt, runs_dir, method=method, system="Always answer Paris.", target="Paris")
    assert a.status == "finished"
    assert not any(s.significant for s in a.spans)
    assert "0 of 14 spans above it" in " ".join(a.notes())


def test_min_effect_is_configurable(runs_dir):
    a = run(PLANTED, runs_dir, method="loo", target="Zurich", min_effect=50.0)
    assert a.record.noise.floor == 50.0 and not any(s.significant for s in a.spans)


# --- faithfulness checks --------------------------------------------------------------------------


def test_cheap_check_compares_top_k_with_random_deletions(runs_dir):
    a = run(PLANTED, runs_dir, method="loo", target="Zurich")
    f = a.record.faithfulness
    assert f.k == 1 and f.top_k == [1] and len(f.random_scores) == 2 and f.lds is None
    assert f.top_k_score > max(f.random_scores)


def test_full_check_adds_lds_on_held_out_masks(runs_dir):
    prompt = "\n".join(["Alpha Team wins.", "it rains.", "Beta Group loses.", "we walk.", "Gamma Unit ties.", "they sing."] * 2)
    a = run(prompt, runs_dir, method="surrogate", masks=64, faithfulness="full", heldout_masks=24)
    f = a.record.faithfulness
    assert f.heldout == 24 and len(f.random_scores) == 8
    assert f.lds is not None and f.lds > 0.5
    purposes = [e.purpose for e in a.record.evaluations]
    assert 0 < purposes.count("heldout") <= 24
    off = run(prompt, runs_dir, method="loo", faithfulness="off")
    assert off.record.faithfulness is None


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894, abs=1e-3)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None


# --- what a user sees -----------------------------------------------------------------------------


def test_renderings_say_how_sure_the_run_is(runs_dir):
    a = run(TWICE, runs_dir, method="surrogate", target="Lyon")
    page = heatmap_html(a.record)
    assert "estimator: surrogate (LASSO on" in page and "bootstrap" in page
    assert "noise floor 0.100" in page and "of the target &#x27;Lyon&#x27;" in page
    assert "± " in page and "uncoloured: below the noise floor" in page
    table = top_table(a.record)
    assert " changes " in table and "noise" in table and "check: deleting the top 2 together" in table
    assert "behaviour: 2 change the answer when deleted" in table  # the copies, deleted together
    assert [s.index for s in a.significant()] == sorted({1, 3}, key=lambda i: -a.spans[i].score)


def test_cli_target_and_surrogate_options(tmp_path, runs_dir, capsys):
    prompt = tmp_path / "p.txt"
    prompt.write_text(PLANTED, encoding="utf-8")
    code = cli_main(["run", str(prompt), "--model", "fake:logprob", "--segment", "line", "--target", "Zurich",
                     "--method", "surrogate", "--masks", "16", "--faithfulness", "full", "--runs-dir", str(runs_dir),
                     "--no-color"])
    out = capsys.readouterr().out
    assert code == 0 and "estimator: surrogate" in out and "signal" in out
    saved = prompt_attr.load_run("latest", runs_dir)
    assert saved.record.config["masks"] == 16 and saved.record.target.text == "Zurich"
    assert saved.top(1)[0].index == 1
    code = cli_main(["run", str(prompt), "--model", "fake", "--target-range", "3-9", "--runs-dir", str(runs_dir)])
    assert code == 2 and "START:END" in capsys.readouterr().err


def test_score_deletions_matches_the_runs_scores(runs_dir):
    a = run(TWICE, runs_dir, method="loo", target="Lyon", faithfulness="off")
    scores = prompt_attr.score_deletions(
        TWICE, [[1], [3], [1, 3]], backend=logprob_fake(), segment="line", target="Lyon", cache=False
    )
    assert scores[:2] == [a.spans[1].score, a.spans[3].score] == [0.0, 0.0]
    assert scores[2] == pytest.approx(2.95)
    with pytest.raises(UsageError, match="outside"):
        prompt_attr.score_deletions(TWICE, [[99]], backend=logprob_fake(), segment="line")


def test_attribute_async_with_a_surrogate(runs_dir):
    a = asyncio.run(
        prompt_attr.attribute_async(TWICE, backend=logprob_fake(), runs_dir=runs_dir, segment="line",
                                    method="surrogate", target="Lyon", cache=False)
    )
    assert set(ranked(a)[:2]) == {1, 3}


def test_official_openai_is_known_to_lack_prompt_log_probabilities():
    from prompt_attr_widget.backends.openai import OpenAIBackend

    backend = OpenAIBackend("gpt-4o-mini", api_key="sk-test-not-used")  # no probe, so no network call
    assert asyncio.run(backend.supports_logprob()) is False

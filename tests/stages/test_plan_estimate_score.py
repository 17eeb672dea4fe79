"""Planning (groups, splits, refinement), estimation (per-span scores) and scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompt_attr_widget.core.errors import BackendError
from prompt_attr_widget.core.schema import Evaluation, Span
from prompt_attr_widget.stages.estimate import attribute_spans
from prompt_attr_widget.stages.plan import (
    Group,
    leave_one_out,
    prefix_order,
    select_for_refinement,
    split,
    worst_case_groups,
)
from prompt_attr_widget.stages.score import cosine, distance_score
from prompt_attr_widget.stages.segment import segment


def make_spans(lengths, gaps=None, headings=()):
    """Spans of 'x' * length separated by the given gaps (default one space)."""
    prompt, spans = "", []
    for i, length in enumerate(lengths):
        if i:
            prompt += gaps[i - 1] if gaps else " "
        start = len(prompt)
        prompt += "x" * length
        spans.append(Span(index=i, start=start, end=len(prompt), text="x" * length, kind="heading" if i in headings else "text"))
    return prompt, spans


def assert_partition(parts, group):
    assert parts, "no parts"
    assert parts[0].start == group.start and parts[-1].end == group.end
    for a, b in zip(parts, parts[1:], strict=False):
        assert a.end == b.start, "parts are not contiguous"
    assert all(p.size >= 1 for p in parts)


# --- groups and leave-one-out -------------------------------------------------


def test_group_basics():
    g = Group(2, 5)
    assert g.size == 3
    assert g.dropped == (2, 3, 4)
    assert g.keep_mask(6) == [True, True, False, False, False, True]


def test_leave_one_out():
    groups = leave_one_out(4)
    assert groups == [Group(0, 1), Group(1, 2), Group(2, 3), Group(3, 4)]
    assert leave_one_out(0) == []


# --- split --------------------------------------------------------------------


@pytest.mark.parametrize("fraction, parts", [(0.2, 5), (0.25, 4), (1 / 3, 3), (0.5, 2), (1.0, 2), (0.1, 10), (0.15, 7)])
def test_split_makes_about_one_over_fraction_equal_parts(fraction, parts):
    prompt, spans = make_spans([20] * 60)
    group = Group(0, 60)
    got = split(group, spans, prompt, fraction)
    assert_partition(got, group)
    assert len(got) == parts
    sizes = [p.size for p in got]
    assert max(sizes) - min(sizes) <= 1, sizes


def test_split_a_subgroup_stays_inside_it():
    prompt, spans = make_spans([10] * 40)
    group = Group(7, 32)
    got = split(group, spans, prompt, 0.2)
    assert_partition(got, group)
    assert len(got) == 5 and all(p.size == 5 for p in got)


def test_split_balances_characters_not_span_counts():
    # ten long spans, then thirty short ones of the same total length
    prompt, spans = make_spans([30] * 10 + [10] * 30)
    got = split(Group(0, 40), spans, prompt, 0.5)
    assert got == [Group(0, 10), Group(10, 40)]


def test_split_of_a_small_group_is_leave_one_out():
    prompt, spans = make_spans([5] * 10)
    assert split(Group(2, 6), spans, prompt, 0.2) == [Group(2, 3), Group(3, 4), Group(4, 5), Group(5, 6)]
    assert split(Group(0, 2), spans, prompt, 0.5) == [Group(0, 1), Group(1, 2)]


def test_split_prefers_a_heading_near_the_ideal_cut():
    # The ideal cut for two parts is before span 10; a heading starts span 8.
    prompt, spans = make_spans([10] * 20, headings={8})
    assert split(Group(0, 20), spans, prompt, 0.5) == [Group(0, 8), Group(8, 20)]
    # without the heading the cut is at the middle
    prompt, spans = make_spans([10] * 20)
    assert split(Group(0, 20), spans, prompt, 0.5) == [Group(0, 10), Group(10, 20)]


def test_split_prefers_blank_line_over_line_break_over_space():
    gaps = [" "] * 19
    gaps[11] = "\n"  # before span 12
    gaps[7] = "\n\n"  # before span 8
    prompt, spans = make_spans([10] * 20, gaps=gaps)
    assert split(Group(0, 20), spans, prompt, 0.5) == [Group(0, 8), Group(8, 20)]
    gaps[7] = " "
    prompt, spans = make_spans([10] * 20, gaps=gaps)
    assert split(Group(0, 20), spans, prompt, 0.5) == [Group(0, 12), Group(12, 20)]


def test_split_ignores_a_heading_far_from_any_ideal_cut():
    prompt, spans = make_spans([10] * 20, headings={1})
    assert split(Group(0, 20), spans, prompt, 0.5) == [Group(0, 10), Group(10, 20)]


def test_split_follows_markdown_sections():
    prompt = "\n\n".join(
        f"## Section {k}\n" + " ".join(f"Line {k}.{j} is here." for j in range(4)) for k in range(4)
    )
    spans = segment(prompt, "sentence")
    assert len(spans) == 20
    got = split(Group(0, 20), spans, prompt, 0.25)
    assert_partition(got, Group(0, 20))
    assert all(spans[p.start].kind == "heading" for p in got), [spans[p.start].text for p in got]


def test_split_with_one_dominant_span_still_makes_progress():
    # Regression: no boundary lay near an ideal cut, so the group was returned
    # whole and hierarchical refinement (and worst_case_groups) never ended.
    prompt, spans = make_spans([1000, 3, 3, 3, 3, 3, 3])
    got = split(Group(0, 7), spans, prompt, 0.2)
    assert_partition(got, Group(0, 7))
    assert len(got) >= 2
    assert worst_case_groups(7, spans, prompt, 0.2) < 20


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 400), st.sampled_from([" ", "\n", "\n\n"]), st.booleans()), min_size=2, max_size=40),
    st.floats(0.05, 1.0),
)
def test_property_split_always_partitions_into_smaller_groups(items, fraction):
    lengths = [length for length, _, _ in items]
    gaps = [gap for _, gap, _ in items[1:]]
    headings = {i for i, (_, _, h) in enumerate(items) if h}
    prompt, spans = make_spans(lengths, gaps=gaps, headings=headings)
    group = Group(0, len(spans))
    parts = split(group, spans, prompt, fraction)
    assert_partition(parts, group)
    assert len(parts) >= 2
    assert len(parts) <= max(2, round(1 / fraction))


# --- refinement -----------------------------------------------------------------

A, B, C, D = Group(0, 4), Group(4, 8), Group(8, 12), Group(12, 16)


def test_refinement_takes_the_shortest_prefix_reaching_the_threshold():
    impacts = {A: 0.5, B: 0.25, C: 0.125, D: 0.125}
    assert select_for_refinement(impacts, 0.5) == [A]
    assert select_for_refinement(impacts, 0.75) == [A, B]  # exactly the threshold is enough
    assert select_for_refinement(impacts, 0.76) == [A, B, C]
    assert select_for_refinement(impacts, 1.0) == [A, B, C, D]


def test_refinement_sorts_by_impact_not_position():
    impacts = {A: 0.1, B: 0.1, C: 0.7, D: 0.1}
    assert select_for_refinement(impacts, 0.7) == [C]
    assert select_for_refinement(impacts, 0.8) == [C, A]  # ties go to the earlier group


def test_refinement_counts_negative_impact_as_zero():
    impacts = {A: 0.5, B: -0.5, C: 0.5}
    assert select_for_refinement(impacts, 1.0) == [A, C]
    assert select_for_refinement({A: 0.6, B: -0.6, C: 0.2}, 0.75) == [A, C]


def test_refinement_never_returns_singletons_but_counts_them():
    s = Group(0, 1)
    impacts = {s: 0.5, Group(1, 5): 0.25, Group(5, 9): 0.25}
    assert select_for_refinement(impacts, 0.75) == [Group(1, 5)]
    assert select_for_refinement(impacts, 0.5) == []


@pytest.mark.parametrize("impacts", [{A: 0.0, B: 0.0}, {A: -0.2, B: 0.0}, {}])
def test_zero_total_impact_refines_nothing(impacts):
    assert select_for_refinement(impacts, 0.85) == []


def test_zero_impact_groups_are_never_refined():
    assert select_for_refinement({A: 1.0, B: 0.0, C: 0.0}, 1.0) == [A]


# --- worst case -------------------------------------------------------------------


def _refine_everything(n, spans, prompt, fraction):
    evaluated, frontier = set(), [Group(0, n)]
    while frontier:
        parts = [p for g in frontier for p in split(g, spans, prompt, fraction)]
        evaluated.update(parts)
        frontier = [p for p in parts if p.size > 1]
    return evaluated


def test_worst_case_groups_binary_splits():
    prompt, spans = make_spans([10] * 8)
    assert worst_case_groups(8, spans, prompt, 0.5) == 14  # 2 + 4 + 8
    prompt, spans = make_spans([10] * 25)
    assert worst_case_groups(25, spans, prompt, 0.2) == 30  # 5 groups of 5, then 25 singletons


@pytest.mark.parametrize("n, fraction", [(64, 0.2), (37, 0.25), (100, 0.1), (13, 0.5)])
def test_worst_case_groups_matches_refining_everything(n, fraction):
    prompt, spans = make_spans([7 + (i * 13) % 17 for i in range(n)])
    assert worst_case_groups(n, spans, prompt, fraction) == len(_refine_everything(n, spans, prompt, fraction))


# --- estimate -----------------------------------------------------------------------


def ev(i, group, score):
    return Evaluation(output=f"out {i}", id=i, round=0, dropped=list(group.dropped), score=score)


def test_estimate_singletons_are_resolved_measurements():
    evaluated = {Group(i, i + 1): ev(i, Group(i, i + 1), s) for i, s in enumerate([0.1, 0.9, 0.0])}
    scores = attribute_spans(3, evaluated)
    assert [s.score for s in scores] == [0.1, 0.9, 0.0]
    assert all(s.resolved for s in scores)
    assert [s.group for s in scores] == [(0, 1), (1, 2), (2, 3)]
    assert [s.evaluation for s in scores] == [0, 1, 2]


def test_estimate_unrefined_group_shares_its_score_equally():
    big, small = Group(0, 4), Group(4, 6)
    evaluated = {
        big: ev(0, big, 0.8),
        small: ev(1, small, 0.6),
        Group(4, 5): ev(2, Group(4, 5), 0.5),
        Group(5, 6): ev(3, Group(5, 6), 0.05),
    }
    scores = attribute_spans(6, evaluated)
    for s in scores[:4]:
        assert s.score == pytest.approx(0.2)
        assert s.resolved is False
        assert s.group == (0, 4)
        assert s.evaluation == 0
    assert [s.score for s in scores[4:]] == [0.5, 0.05]  # the smallest group wins
    assert all(s.resolved for s in scores[4:])
    assert sum(s.score for s in scores[:4]) == pytest.approx(0.8)


def test_estimate_span_never_evaluated():
    scores = attribute_spans(3, {Group(0, 1): ev(0, Group(0, 1), 0.4)})
    assert scores[0].resolved and scores[0].score == 0.4
    # spans no evaluation covered get no score at all (not a false 0)
    assert [s.index for s in scores] == [0]


def test_estimate_order_of_evaluation_does_not_matter():
    groups = [Group(0, 6), Group(0, 3), Group(3, 6), Group(1, 2)]
    scores = [0.9, 0.6, 0.3, 0.5]
    forward = attribute_spans(6, {g: ev(i, g, s) for i, (g, s) in enumerate(zip(groups, scores, strict=True))})
    backward = attribute_spans(6, {g: ev(i, g, s) for i, (g, s) in reversed(list(enumerate(zip(groups, scores, strict=True))))})
    assert forward == backward
    assert forward[1].score == 0.5 and forward[1].resolved
    assert forward[0].score == pytest.approx(0.2) and forward[0].group == (0, 3)
    assert forward[4].score == pytest.approx(0.1) and forward[4].group == (3, 6)


# --- score ------------------------------------------------------------------------------


def test_identical_vectors_score_zero():
    v = [0.3, -1.2, 4.0, 0.0]
    assert cosine(v, v) == pytest.approx(1.0)
    assert distance_score(cosine(v, v)) == pytest.approx(0.0, abs=1e-12)
    assert cosine(v, [2 * x for x in v]) == pytest.approx(1.0)


def test_orthogonal_and_opposite_vectors_score_one():
    assert cosine([1, 0], [0, 1]) == 0.0
    assert distance_score(cosine([1, 0], [0, 1])) == 1.0
    assert cosine([1, 2], [-1, -2]) == pytest.approx(-1.0)
    assert distance_score(cosine([1, 2], [-1, -2])) == 1.0


def test_zero_vectors():
    assert cosine([0, 0, 0], [0, 0, 0]) == 1.0
    assert cosine([0, 0, 0], [1, 2, 3]) == 0.0
    assert cosine([1, 2, 3], [0, 0, 0]) == 0.0
    assert distance_score(cosine([0, 0], [0, 0])) == 0.0


def test_size_mismatch_raises():
    with pytest.raises(BackendError, match=r"sizes differ \(2 vs 3 numbers\)"):  # a run fails, explained
        cosine([1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("c, d", [(1.0, 0.0), (0.25, 0.75), (0.0, 1.0), (-0.5, 1.0), (1.0000001, 0.0), (-1.0, 1.0)])
def test_distance_score_is_clipped(c, d):
    assert distance_score(c) == pytest.approx(d)


_VEC = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=16)


@settings(max_examples=300, deadline=None)
@given(_VEC, st.data())
def test_property_score_bounds(a, data):
    b = data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=len(a), max_size=len(a)))
    c = cosine(a, b)
    assert -1.0 <= c <= 1.0
    assert 0.0 <= distance_score(c) <= 1.0
    assert c == pytest.approx(cosine(b, a))
    if np.linalg.norm(a) > 0:
        assert math.isclose(cosine(a, a), 1.0, abs_tol=1e-9)


def _kept_prefix(a: tuple[int, ...], b: tuple[int, ...], n: int) -> int:
    """Spans two masked prompts share before the first span one keeps and the other drops."""
    for i in range(n):
        if (i in a) != (i in b):
            return i
    return n


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.data())
def test_prefix_order_shares_the_most_kept_prefix_of_any_order(n, data):
    """Sorted by keep-vector, consecutive masks share at least as many leading spans as in
    any other order (the depth-first order of the trie of kept prefixes)."""
    masks = data.draw(st.lists(st.lists(st.integers(0, n - 1), unique=True).map(lambda m: tuple(sorted(m))),
                               min_size=1, max_size=12, unique=True))
    ordered = prefix_order(masks, n)
    assert sorted(ordered) == sorted(masks)

    def shared(order):  # the baseline (nothing dropped) is evaluated first
        return sum(_kept_prefix(a, b, n) for a, b in zip([(), *order], order, strict=False))

    other = data.draw(st.permutations(masks))
    assert shared(ordered) >= shared(list(other))


def test_prefix_order_of_leave_one_out_deletes_the_last_span_first():
    assert prefix_order([(0,), (1,), (2,), (3,)], 4) == [(3,), (2,), (1,), (0,)]
    # a deeper deletion of the same kept prefix follows its parent
    assert prefix_order([(0, 1), (2,), (0,), (1,)], 3) == [(2,), (1,), (0,), (0, 1)]

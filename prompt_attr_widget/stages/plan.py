"""Plan: which keep-masks over the spans to evaluate.

Every plan is expressed as groups of consecutive spans to delete together;
a group becomes a keep-mask (False where deleted) for rendering. One
representation serves leave-one-out (every group is one span) and the
hierarchical passes (groups of about `fraction` of the prompt, refined).

The refinement rule (documented in the README): after a pass, sort that
pass's groups by impact (their score, negatives counted as 0) from high to
low, and refine the shortest prefix whose impact adds up to at least
`threshold` (default 0.85) of the pass's total impact. Groups outside that
prefix are final: their spans share the group's score. A pass whose total
impact is zero refines nothing, since there is nothing to explain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from ..core.schema import Span


@dataclass(frozen=True, order=True)
class Group:
    """Spans [start, end) by index, deleted together."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def dropped(self) -> tuple[int, ...]:
        return tuple(range(self.start, self.end))

    def keep_mask(self, n_spans: int) -> list[bool]:
        return [not (self.start <= i < self.end) for i in range(n_spans)]


def random_masks(n_spans: int, count: int, keep_prob: float, seed: int) -> list[tuple[int, ...]]:
    """`count` seeded random masks, as the spans each deletes.

    Every span is kept with probability `keep_prob`, independently. Rows are
    drawn in order from one generator, so the first 16 masks of a 64-mask
    run are the 16 masks of a 16-mask run with the same seed (and come from
    the cache).
    """
    import numpy as np

    keep = np.random.default_rng(seed).random((count, n_spans)) < keep_prob
    return [tuple(np.flatnonzero(~row).tolist()) for row in keep]


def leave_one_out(n_spans: int) -> list[Group]:
    return [Group(i, i + 1) for i in range(n_spans)]


def split(group: Group, spans: Sequence[Span], prompt: str, fraction: float) -> list[Group]:
    """Split a group into about 1/fraction parts of similar length in characters.

    Each cut goes to the boundary with the strongest structure (a heading
    start beats a blank line beats a line break beats a space) among those
    near the ideal cut, so groups follow the prompt's own sections.
    """
    parts = max(2, round(1 / fraction))
    if group.size <= parts:
        return leave_one_out_range(group)
    lengths = [spans[i].end - spans[i].start for i in range(group.start, group.end)]
    total = sum(lengths)
    cumulative, acc = [], 0
    for length in lengths[:-1]:
        acc += length
        cumulative.append(acc)  # cumulative[j]: chars before boundary j+1 (relative)
    window = total / parts / 2
    cuts: list[int] = []
    for k in range(1, parts):
        target = total * k / parts
        candidates = [
            j + 1
            for j, c in enumerate(cumulative)
            if abs(c - target) <= window and (not cuts or j + 1 > cuts[-1])
        ]
        if not candidates:
            continue
        best = max(
            candidates,
            key=lambda b: (
                _boundary_strength(spans, prompt, group.start + b),
                -abs(cumulative[b - 1] - target),
            ),
        )
        cuts.append(best)
    if not cuts:
        # One span dwarfs the rest, so no boundary lies near any ideal cut: cut
        # nearest the middle anyway, or the group would be "split" into itself
        # and refinement would never end.
        cuts.append(min(range(1, group.size), key=lambda b: abs(cumulative[b - 1] - total / 2)))
    bounds = [0, *cuts, group.size]
    return [Group(group.start + a, group.start + b) for a, b in pairwise(bounds) if b > a]


def leave_one_out_range(group: Group) -> list[Group]:
    return [Group(i, i + 1) for i in range(group.start, group.end)]


def _boundary_strength(spans: Sequence[Span], prompt: str, index: int) -> int:
    """How strong the boundary before span `index` is: 3 heading, 2 blank line, 1 line break."""
    if spans[index].kind == "heading":
        return 3
    gap = prompt[spans[index - 1].end : spans[index].start]
    return min(gap.count("\n"), 2)


def select_for_refinement(impacts: dict[Group, float], threshold: float) -> list[Group]:
    """The hottest groups holding at least `threshold` of the pass's impact (see module doc)."""
    positive = {g: max(0.0, s) for g, s in impacts.items() if g.size > 1}
    total = sum(max(0.0, s) for s in impacts.values())
    if total <= 0:
        return []
    chosen, covered = [], 0.0
    for group, impact in sorted(impacts.items(), key=lambda kv: (-kv[1], kv[0])):
        if covered >= threshold * total or impact <= 0:
            break
        covered += impact
        if group in positive:
            chosen.append(group)
    return chosen


def worst_case_groups(n_spans: int, spans: Sequence[Span], prompt: str, fraction: float) -> int:
    """How many groups the hierarchical plan evaluates if it refines everything."""
    count, frontier = 0, [Group(0, n_spans)]
    while frontier:
        nxt = []
        for group in frontier:
            parts = split(group, spans, prompt, fraction)
            count += len(parts)
            nxt.extend(p for p in parts if p.size > 1)
        frontier = nxt
    return count


def prefix_order(masks: Sequence[tuple[int, ...]], n_spans: int) -> list[tuple[int, ...]]:
    """The masks in the order that lets consecutive prompts share the longest prefixes.

    A masked prompt's text is its kept spans in order, so two prompts agree up to the
    first span one keeps and the other drops. Sorting by the keep-vector (kept spans
    first) visits the trie of kept prefixes depth first: each shared prefix is decoded
    once, and a backend that caches the previous prompt (the local model's aligned KV
    chunks, a server's prompt cache) reuses it for every mask below it. With leave-one-out
    this evaluates the deletion of the last span first and of the first span last. Only
    speed depends on the order; results never do.
    """
    def keep_vector(mask: tuple[int, ...]) -> tuple[bool, ...]:
        dropped = set(mask)
        return tuple(i not in dropped for i in range(n_spans))

    return sorted(masks, key=keep_vector, reverse=True)

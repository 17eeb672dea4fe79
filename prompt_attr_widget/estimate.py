"""Estimate: from evaluated groups to one attribution per span.

A span's score is the score of the smallest evaluated group containing it.
Where that group is the span alone (always, under leave-one-out) the score
is measured and `resolved`. Where it is a larger group the hierarchical
pass chose not to refine, each of its spans gets an equal share of the
group's score and `resolved=False`: a cold group is reported as cold without
paying to split it, and never as a hot single span. A span no evaluation
covered (a run stopped early) gets no score at all, not a false zero.
"""

from __future__ import annotations

from .plan import Group
from .schema import Evaluation, SpanScore


def attribute_spans(n_spans: int, evaluated: dict[Group, Evaluation]) -> list[SpanScore]:
    best: list[tuple[Group, Evaluation] | None] = [None] * n_spans
    for group, ev in evaluated.items():
        for i in range(group.start, group.end):
            current = best[i]
            if current is None or group.size < current[0].size:
                best[i] = (group, ev)
    scores = []
    for i, entry in enumerate(best):
        if entry is None:
            continue  # never measured (a stopped run): no score rather than a false 0
        group, ev = entry
        scores.append(
            SpanScore(
                index=i,
                score=ev.score / group.size,
                resolved=group.size == 1,
                group=(group.start, group.end),
                evaluation=ev.id,
            )
        )
    return scores

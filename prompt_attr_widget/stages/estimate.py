"""Estimate: from evaluated masks to one attribution per span.

Leave-one-out and hierarchical runs delete groups of consecutive spans. A
span's score is the score of the smallest evaluated group containing it.
Where that group is the span alone (always, under leave-one-out) the score
is measured and `resolved`. Where it is a larger group the hierarchical
pass chose not to refine, each of its spans gets an equal share of the
group's score and `resolved=False`: a cold group is reported as cold without
paying to split it, and never as a hot single span. A span no evaluation
covered (a run stopped early) gets no score at all, not a false zero.

Surrogate runs delete random subsets; their scores come from the sparse
linear fit in `surrogate.py`, each with a bootstrap standard error.
Significance against the noise floor is added last, the same for all.
"""

from __future__ import annotations

import math

from ..core.schema import Evaluation, NoiseFloor, SpanScore, SurrogateFit
from . import surrogate
from .noise import flag
from .plan import Group


def estimate(
    method: str,
    n_spans: int,
    evaluations: list[Evaluation],
    noise: NoiseFloor | None,
    *,
    masks: list[tuple[int, ...]] | None = None,
    keep_prob: float = 0.5,
    seed: int = 42,
    bootstrap: int = surrogate.BOOTSTRAP,
) -> tuple[list[SpanScore], SurrogateFit | None]:
    """The attribution of the attribution-purpose evaluations so far, flagged against the noise.

    `bootstrap=0` skips the surrogate's standard errors: live refits while
    masks arrive only need the weights, and the final fit pays for them.
    """
    used = [e for e in evaluations if e.purpose == "attribution"]
    if method == "surrogate":
        scores, fit = surrogate_spans(n_spans, used, masks, keep_prob, seed, bootstrap)
    else:
        groups = {Group(min(e.dropped), max(e.dropped) + 1): e for e in used if e.dropped}
        scores, fit = attribute_spans(n_spans, groups), None
    return flag(scores, noise), fit


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


def surrogate_spans(
    n_spans: int,
    evaluations: list[Evaluation],
    masks: list[tuple[int, ...]] | None,
    keep_prob: float,
    seed: int,
    bootstrap: int,
) -> tuple[list[SpanScore], SurrogateFit | None]:
    """Fit the surrogate on every planned mask evaluated so far (repeated masks count twice)."""
    by_mask = {tuple(e.dropped): e.score for e in evaluations}
    rows = [m for m in (masks if masks is not None else list(by_mask)) if m in by_mask]
    rows.append(())  # the baseline itself: nothing deleted, score 0 by definition
    by_mask[()] = 0.0
    if len(rows) < 4:
        return [], None  # too few masks to fit anything
    x = surrogate.deleted_matrix(rows, n_spans)
    result = surrogate.fit(x, [by_mask[m] for m in rows], seed=seed, bootstrap=bootstrap)
    scores = [
        SpanScore(
            index=i,
            score=float(result.weights[i]),
            group=(i, i + 1),
            stderr=None if math.isnan(result.stderr[i]) else float(result.stderr[i]),
        )
        for i in range(n_spans)
    ]
    fit = SurrogateFit(
        masks=len(set(rows)) - 1,
        keep_prob=keep_prob,
        alpha=result.alpha,
        intercept=result.intercept,
        r2=result.r2,
        bootstrap=result.bootstrap,
    )
    return scores, fit

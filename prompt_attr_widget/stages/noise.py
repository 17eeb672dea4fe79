"""Noise: how far a score moves when nothing was deleted, and which spans rise above it.

The baseline is asked `repeats` times (3 for remote APIs, whose answers vary
even at temperature 0; 1 for the deterministic local and fake backends,
where a repeat would only return the same answer). Nothing was deleted, so
any score between two of those answers is pure noise: every pair is
compared (k answers give k(k-1)/2 samples at no extra cost). The floor is
the largest of them, and never below `min_effect`, the smallest effect
worth reporting in the scorer's unit (each scorer's own, unless the config
gives one; see engine/scorers.py): a deterministic model has no
sampling noise, yet a 0.01 nats/token wobble is not a finding. The largest
of a few samples can miss rare noise; `noise_repeats` buys more.

A span is significant when its score is above the floor; for the surrogate
also when its 95% interval (weight - 1.96 standard errors) stays above
zero. A span that only holds a share of a group the hierarchical pass did
not refine was never measured alone, so its significance is not assessed
(None), never claimed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ..core.schema import NoiseFloor, SpanScore

DETERMINISTIC_BACKENDS = ("local", "fake")


def default_repeats(backend: str) -> int:
    return 1 if backend in DETERMINISTIC_BACKENDS else 3


def pairwise(points: list, distance: Callable[[object, object], float]) -> list[float]:
    """The score between every two answers to the same prompt."""
    return [distance(a, b) for a, b in itertools.combinations(points, 2)]


def noise_floor(samples: list[float], repeats: int, min_effect: float) -> NoiseFloor:
    samples = [round(s, 6) for s in samples]
    return NoiseFloor(repeats=repeats, samples=samples, min_effect=min_effect, floor=max([min_effect, *samples]))


def flag(scores: list[SpanScore], noise: NoiseFloor | None) -> list[SpanScore]:
    """The same scores with `significant` set against the noise floor."""
    if noise is None:
        return scores
    out = []
    for s in scores:
        if not s.resolved:
            significant = None
        else:
            significant = s.score > noise.floor and (s.stderr is None or s.score - 1.96 * s.stderr > 0)
        out.append(s.model_copy(update={"significant": significant}))
    return out

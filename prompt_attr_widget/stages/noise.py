"""Noise: how far a score moves when nothing that matters was deleted, and which spans rise above it.

Two measurements, one floor:

* Repeated baselines. The baseline is asked `repeats` times (3 for remote
  APIs, whose answers vary even at temperature 0; 1 for the deterministic
  local and fake backends, where a repeat would only return the same
  answer). Every pair of those answers is compared (k answers give
  k(k-1)/2 samples at no extra cost): sampling noise.
* Placebo deletions (the calibrated null). A deterministic model has no
  sampling noise, yet deleting almost any sentence moves the answer's
  log-probability a little: the text around it shifts. How much depends on
  the prompt and the answer, so it is measured, not assumed: `null_samples`
  copies of the prompt each get one neutral sentence (`PLACEBOS`, sharing
  no word with the prompt or the answer, about a median span long) inserted
  at a seeded boundary, in the gap style of that boundary. Each copy is
  scored against the baseline like any deletion; deleting that sentence
  again would give the prompt back, so its score is exactly what deleting
  irrelevant text of that size does here. Placebos, not random sub-spans of
  low-scoring spans, because nothing else is known to be irrelevant before
  the scores are in (and choosing by score would bias the null downwards),
  and not a permutation null over masks, which only the surrogate has.

The floor is the largest of: `min_effect` (the smallest effect worth
reporting, in the scorer's unit), every repeated-baseline gap, and the
calibrated bound `t(1 - NULL_FPR/2, K) * rms(placebo scores)`. If placebo
scores are centred normal with spread s, a fresh irrelevant deletion's
score over the root mean square of K others is Student-t with K degrees of
freedom, so its magnitude passes the bound with probability NULL_FPR (5%);
a placebo mean away from zero only widens the bound. The benchmark checks
the rate on held-out placebos (README, "Honest significance").

A span is significant when its score is above the floor; for the surrogate
also when its 95% interval (weight - 1.96 standard errors) stays above
zero. A span that only holds a share of a group the hierarchical pass did
not refine was never measured alone, so its significance is not assessed
(None), never claimed. Significant spans then face the behavioural check
(stages/behaviour.py).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from ..core.schema import NoiseFloor, Span, SpanScore

DETERMINISTIC_BACKENDS = ("local", "fake")
NULL_FPR = 0.05  # the share of irrelevant deletions the calibrated floor lets through
MIN_PLACEBOS = 4  # fewer give no calibrated bound (the floor is min_effect and the repeats)
# Neutral sentences for placebo deletions: concrete, dull, about nothing a prompt asks for.
PLACEBOS = (  # no names, no numbers, no capitalised word beyond a two-letter first one
    "It was printed on plain white paper.",
    "A copy of this note is kept on file.",
    "It was an ordinary afternoon.",
    "A bird sang somewhere outside.",
    "An old clock hung on the wall.",
    "On the desk sat a blue folder.",
    "In the corner stood a wooden chair.",
    "At noon the hallway was quiet.",
    "By the door hung a grey coat.",
    "As usual, the kettle was cold.",
    "Of the two windows, one was open.",
    "No one walked past the door.",
    "It rained a little during the night.",
    "A pencil lay next to the stapler.",
    "On the shelf stood a row of jars.",
    "It was quiet in the car park.",
)
_WORD = re.compile(r"\w+")


def default_repeats(backend: str) -> int:
    return 1 if backend in DETERMINISTIC_BACKENDS else 3


def pairwise(points: list, distance: Callable[[object, object], float]) -> list[float]:
    """The score between every two answers to the same prompt."""
    return [distance(a, b) for a, b in itertools.combinations(points, 2)]


def t_quantile(p: float, dof: int) -> float:
    """Student-t quantile, by the Cornish-Fisher expansion around the normal one (numpy has
    none): within 0.3% of the exact value from 4 degrees of freedom, all the null uses."""
    z = NormalDist().inv_cdf(p)
    v = float(dof)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


def calibrated_bound(placebo: Sequence[float], fpr: float = NULL_FPR) -> float | None:
    """The score an irrelevant deletion's magnitude passes with probability `fpr` (module doc);
    None with fewer than MIN_PLACEBOS scores, too few to estimate a spread."""
    if len(placebo) < MIN_PLACEBOS:
        return None
    rms = math.sqrt(sum(x * x for x in placebo) / len(placebo))
    return t_quantile(1 - fpr / 2, len(placebo)) * rms


def noise_floor(samples: list[float], repeats: int, min_effect: float, placebo: Sequence[float] = ()) -> NoiseFloor:
    samples = [round(s, 6) for s in samples]
    placebo = [round(p, 6) for p in placebo]
    bound = calibrated_bound(placebo)
    bound = None if bound is None else round(bound, 6)
    floor = max([min_effect, *samples, *([bound] if bound is not None else [])])
    return NoiseFloor(repeats=repeats, samples=samples, min_effect=min_effect, floor=floor, placebo=placebo,
                      calibrated=bound, fpr=NULL_FPR if bound is not None else None)


def null_bound(noise: NoiseFloor | None) -> float:
    """What irrelevant deletions and repeated answers reach, without the minimum effect: a
    span scoring above it moves the answer more than chance, if too little to be reported."""
    if noise is None:
        return 0.0
    return max([0.0, *noise.samples, *([noise.calibrated] if noise.calibrated is not None else [])])


def placebo_prompt(prompt: str, spans: Sequence[Span], k: int, seed: int, answer: str = "") -> str:
    """Copy `k` of the prompt with one neutral sentence inserted (see the module doc).

    The boundaries are visited in a seeded order, one per copy, and each round over them
    starts one sentence further into the placebo list, so no two copies are the same text
    (until boundaries times sentences run out) and more placebos extend fewer. The sentence
    goes before a span, followed by the gap that stood before that span (after the first
    span's own gap when it goes first), so a placebo in a paragraph is one more sentence of
    it and a placebo between lines is a line.
    """
    n = len(spans)
    at = int(np.random.default_rng([seed, 7919]).permutation(n)[k % n])
    if at > 0:
        gap = prompt[spans[at - 1].end:spans[at].start]
    else:
        gap = prompt[spans[0].end:spans[1].start] if n > 1 else "\n"
    text = _placebo_text(prompt + "\n" + answer, spans, k // n + k % n)
    where = spans[at].start
    return prompt[:where] + text + (gap or " ") + prompt[where:]


def _placebo_text(context: str, spans: Sequence[Span], first: int) -> str:
    """Neutral sentences sharing the fewest words with the context, about a median span long,
    from the `first`-th of them on (cyclically)."""
    words = {w.casefold() for w in _WORD.findall(context)}
    overlap = {p: len({w.casefold() for w in _WORD.findall(p)} & words) for p in PLACEBOS}
    fewest = min(overlap.values())
    pool = [p for p in PLACEBOS if overlap[p] == fewest]
    if len(pool) < 4:  # too few to vary: take the least overlapping half
        pool = sorted(PLACEBOS, key=lambda p: overlap[p])[: len(PLACEBOS) // 2]
    want = float(np.median([s.end - s.start for s in spans]))
    chosen = [pool[first % len(pool)]]
    while sum(map(len, chosen)) < 0.8 * want and len(chosen) < len(pool):
        chosen.append(pool[(first + len(chosen)) % len(pool)])
    return " ".join(chosen)


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

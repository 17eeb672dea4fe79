"""Faithfulness: checks that an attribution predicts what deletions actually do.

* Top-k deletion (cheap, every run): delete the k top-ranked spans together
  and compare the score with deleting k random spans. A faithful
  attribution's top-k deletion moves the answer more than random ones.
* LDS, the linear datamodeling score (costly, `faithfulness="full"`): on
  held-out random masks, the Spearman rank correlation between the score
  each mask is predicted to get (the sum of its deleted spans' scores, plus
  the intercept for the surrogate) and the score it really got.
"""

from __future__ import annotations

import numpy as np

from ..core.schema import SpanScore, rank

MAX_K = 3
RANDOM_DRAWS = {"cheap": 2, "full": 8}


def top_k(scores: list[SpanScore], n_spans: int) -> list[int]:
    """The spans to delete together: the significant ones (1 to 3), else the single top one."""
    ranked = rank(scores)
    k = min(MAX_K, max(1, sum(bool(s.significant) for s in scores)), max(1, n_spans - 1))
    return sorted(s.index for s in ranked[:k])


def random_subsets(n_spans: int, k: int, draws: int, seed: int) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(sorted(rng.choice(n_spans, size=k, replace=False).tolist())) for _ in range(draws)]


def predicted(dropped_sets: list[tuple[int, ...]], span_scores: dict[int, float], intercept: float = 0.0) -> list[float]:
    return [intercept + sum(span_scores.get(i, 0.0) for i in d) for d in dropped_sets]


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation with average ranks for ties; None if either side is constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if len(ra) < 3 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):  # ties share their average rank
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    return ranks

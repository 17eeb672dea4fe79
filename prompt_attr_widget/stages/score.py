"""Score: how far an ablated answer moved from the baseline answer.

Three scorers, one per kind of backend access, each recorded with its unit:

* `logprob` (where the backend can score a given answer): the drop in the
  teacher-forced log-probability of the baseline answer, or of the target
  part of it, in nats per token, `mean lp(baseline prompt) - mean lp(ablated
  prompt)`. Nothing is generated; the most faithful and the cheapest.
* `embedding`: normalised embedding distance `clip(1 - cos, 0, 1)` between
  the ablated and the baseline answer: 0 means the same meaning (an
  identical answer scores exactly 0 without an embedding call), 1 unrelated.
* `target_overlap` (black-box APIs with a target): the share of the target's
  words that no longer appear, in order, in the ablated answer. 0 means the
  target survives intact, 1 that none of it does.

These are the formulas; the scorers that make the calls, each with its
unit and smallest effect worth reporting, are classes in engine/scorers.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import BackendError, UsageError
from ..core.schema import Target

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Unit:
    """What a scorer's numbers mean, and the smallest of them worth reporting (the noise
    floor's lowest value, unless the config gives one)."""

    unit: str
    min_effect: float


UNITS = {
    "logprob": Unit("log-prob drop (nats/token)", 0.1),
    "embedding": Unit("embedding distance (0-1)", 0.05),
    "target_overlap": Unit("share of target lost (0-1)", 0.2),
}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        # The one place embeddings are compared: sizes that differ mean the embedding
        # model changed mid-run, and numpy would crash or compare nonsense.
        raise BackendError(
            f"embedding sizes differ ({va.shape[0]} vs {vb.shape[0]} numbers): the embedding model "
            "changed during the run; check --embed-model and the server, then run again"
        )
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(va @ vb / (na * nb), -1.0, 1.0))


def distance_score(cos: float) -> float:
    """Normalised embedding distance in [0, 1]."""
    return float(min(1.0, max(0.0, 1.0 - cos)))


def resolve_target(answer: str, target: str | tuple[int, int] | None) -> Target | None:
    """Find the target in the baseline answer: text (first occurrence) or a character range."""
    if target is None:
        return None
    if isinstance(target, str):
        at = answer.find(target)
        if at < 0:
            at = answer.casefold().find(target.casefold()) if len(answer.casefold()) == len(answer) else -1
        if at < 0:
            shown = " ".join(answer.split())
            shown = shown if len(shown) <= 160 else shown[:159] + "…"
            raise UsageError(
                f"target {target!r} does not occur in the baseline answer {shown!r}: give text the "
                "answer contains, or a character range start:end of it"
            )
        return Target(text=answer[at : at + len(target)], start=at, end=at + len(target))
    start, end = target
    if end > len(answer):
        raise UsageError(
            f"target range {start}:{end} is outside the baseline answer ({len(answer)} characters)"
        )
    return Target(text=answer[start:end], start=start, end=end)


def target_lost(target: str, output: str) -> float:
    """Share of the target's words missing from the output (longest common subsequence).

    Words are case-folded `\\w+` runs; a target without any word is compared
    character by character.
    """
    want = [w.casefold() for w in _WORD.findall(target)] or list(target)
    have = [w.casefold() for w in _WORD.findall(output)] if _WORD.search(target) else list(output)
    if not want:
        return 0.0
    return 1.0 - lcs_length(want, have) / len(want)


def lcs_length(a: list[str], b: list[str]) -> int:
    """The length of the longest common subsequence of two word lists."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]

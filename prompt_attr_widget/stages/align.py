"""Span alignment and answer diffs: what a prompt edit changed, for comparisons.

Spans of two runs are aligned by their text (difflib over
whitespace-normalised span texts): a span is `same`, `changed` (edited in
place), `added` or `removed`. Aligned spans get a score delta, but only
when both runs measured in the same unit; otherwise the delta is left out
rather than comparing log-probabilities with distances. Each side keeps its
run's significance, so a comparison never colours noise. Answers are
diffed word by word, by the one diff every view shows (the comparison's
answers, and the widget's ablated answer against the baseline).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..core.schema import RunRecord


@dataclass(frozen=True)
class AlignedSpan:
    """One row of the span alignment: a span of A, of B, or of both."""

    status: str  # same, changed, added (only in B), removed (only in A)
    index_a: int | None
    index_b: int | None
    text_a: str | None
    text_b: str | None
    score_a: float | None
    score_b: float | None
    delta: float | None  # score_b - score_a, when both exist in one unit
    significant_a: bool | None = None  # above A's noise floor (None: not assessed, or no span in A)
    significant_b: bool | None = None


def align_spans(a: RunRecord, b: RunRecord, comparable: bool) -> list[AlignedSpan]:
    """Spans of A and B matched by text; an edited span pairs with the one it replaced."""
    score_a, score_b = _scores(a), _scores(b)  # index: SpanScore
    key_a, key_b = [_norm(s.text) for s in a.spans], [_norm(s.text) for s in b.spans]
    rows: list[AlignedSpan] = []

    def row(status, i, j):
        xa = score_a.get(i) if i is not None else None
        xb = score_b.get(j) if j is not None else None
        sa, sb = (x.score if x else None for x in (xa, xb))
        delta = sb - sa if comparable and sa is not None and sb is not None else None
        rows.append(AlignedSpan(
            status, i, j, a.spans[i].text if i is not None else None, b.spans[j].text if j is not None else None,
            sa, sb, delta, xa.significant if xa else None, xb.significant if xb else None,
        ))

    matcher = difflib.SequenceMatcher(None, key_a, key_b, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(a0, a1), range(b0, b1), strict=True):
                row("same", i, j)
            continue
        paired = min(a1 - a0, b1 - b0) if op == "replace" else 0
        for k in range(paired):
            row("changed", a0 + k, b0 + k)
        for i in range(a0 + paired, a1):
            row("removed", i, None)
        for j in range(b0 + paired, b1):
            row("added", None, j)
    return rows


_WORD = re.compile(r"\S+\s*")  # a word and the whitespace after it


def word_diff(text_a: str, text_b: str, *, spacing: bool = False) -> list[tuple[str, str]]:
    """The two answers' difference, word by word: (equal | delete | insert, words).

    By default the words of a piece are joined by single spaces (a view puts
    a space between pieces). With `spacing`, every piece keeps the whitespace
    that follows its words in its own text (and B's leading whitespace), so
    the equal and insert pieces join to exactly `text_b`, line breaks and all.
    The words compared, and so the diff, are the same either way.
    """
    ta, tb = _WORD.findall(text_a), _WORD.findall(text_b)
    wa, wb = [t.rstrip() for t in ta], [t.rstrip() for t in tb]
    pa, pb, join = (ta, tb, "".join) if spacing else (wa, wb, " ".join)
    out: list[tuple[str, str]] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op in ("delete", "replace") and a1 > a0:
            out.append(("delete", join(pa[a0:a1])))
        if op in ("equal", "insert", "replace") and b1 > b0:
            out.append(("equal" if op == "equal" else "insert", join(pb[b0:b1])))
    lead = text_b[: len(text_b) - len(text_b.lstrip())]
    if spacing and lead:
        first = next((k for k, (op, _) in enumerate(out) if op != "delete"), None)
        if first is None:
            out.append(("insert", lead))
        else:
            out[first] = (out[first][0], lead + out[first][1])
    return out


def _scores(record: RunRecord) -> dict:
    return {s.index: s for s in record.attribution}


def _norm(text: str) -> str:
    return " ".join(text.split())


def changes(a: dict, b: dict) -> dict[str, tuple]:
    return {k: (a.get(k), b.get(k)) for k in sorted({*a, *b}) if a.get(k) != b.get(k)}

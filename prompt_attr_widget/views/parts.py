"""The answer's parts: which prompt spans caused each sentence of the answer.

A run measures how deleting spans moves the whole answer (or one target of
it); most questions are about one part of it ("why did it say
*discontinued*?"). From the stored evaluations every part of the answer is
scored again with no model call (stages/retarget.py), which gives

* `AnswerMatrix`: the attribution of every answer part (sentence, list item,
  line of code) to every prompt span, with each cell's significance against
  that part's own noise floor;
* `Explanation`: for each part, the spans that significantly caused it;
* `drives`: for an untargeted run, the part each top span moves most, so the
  default views connect a span to the sentence it drives without the user
  knowing about targets.

numpy and the estimators load on first use: `prompt-attr ls` imports the
views and must start without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core.schema import RunRecord, Span, rank
from ..core.text import one_line, safe_html_text

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class AnswerPart:
    """One part of the baseline answer: `text == answer[start:end]`."""

    index: int
    start: int
    end: int
    text: str
    kind: str  # text (a sentence), list (an item's line), code (a line of code), heading

    @classmethod
    def of(cls, span: Span) -> AnswerPart:
        return cls(span.index, span.start, span.end, span.text, span.kind)

    def __repr__(self) -> str:
        return f"<answer part {self.index} [{self.start}:{self.end}): {one_line(self.text, 60)!r}>"


@dataclass
class AnswerMatrix:
    """Attribution of every answer part (rows) to every prompt span (columns), in the run's unit.

    `scores[p, i]` is span i's score for part p (NaN: not measured), `stderr` the surrogate's
    bootstrap standard error (NaN where none), `significant[p, i]` True above that part's
    noise floor, False below it, None where not assessed (an unrefined group's share).
    """

    parts: list[AnswerPart]
    spans: list[Span]
    scores: np.ndarray
    stderr: np.ndarray
    significant: np.ndarray  # dtype object: True, False or None
    unit: str
    records: list[RunRecord | None]  # each part's retargeted record (None: no token covers it)
    unscored: dict[int, str] = field(default_factory=dict)  # part index: why it has no record

    @property
    def shape(self) -> tuple[int, int]:
        return self.scores.shape

    def to_dataframe(self):
        """Rows: answer parts (their text); columns: prompt spans (index and text)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from None
        index = pd.Index([one_line(p.text, 60) for p in self.parts], name="answer part")
        columns = pd.MultiIndex.from_tuples([(s.index, one_line(s.text, 40)) for s in self.spans], names=["span", "text"])
        return pd.DataFrame(self.scores, index=index, columns=columns)

    def __repr__(self) -> str:
        return f"<AnswerMatrix {len(self.parts)} answer parts × {len(self.spans)} prompt spans, {self.unit}>"


@dataclass
class Cause:
    """A span that significantly caused one part of the answer."""

    span: Span
    score: float
    stderr: float | None


@dataclass
class Group:
    """Spans [start, end) a hierarchical pass left unrefined, and their score deleted together."""

    start: int
    end: int
    score: float


@dataclass
class PartExplanation:
    part: AnswerPart
    causes: list[Cause]  # significant spans, most influential first
    floor: float | None  # the part's noise floor
    unrefined: list[Group] = field(default_factory=list)  # groups above the floor never split
    why: str | None = None  # why the part could not be scored at all

    def lines(self) -> list[str]:
        """What this part's entry says: its causes, the unrefined groups that hold one, or why none."""
        if self.why is not None:
            return [f"not scored: {self.why}"]
        lines = []
        for c in self.causes:
            err = "" if c.stderr is None else f" ± {c.stderr:.3f}"
            lines.append(f"{c.score:.3f}{err}  span {c.span.index}: {one_line(c.span.text, 60)!r}")
        for g in self.unrefined:
            lines.append(f"{g.score:.3f}  spans {g.start}-{g.end - 1} together: a group the run's hierarchical "
                         "passes did not refine (not measured alone; a run with --target for this part refines it)")
        if not lines:
            floor = "" if self.floor is None else f" {self.floor:.3f}"
            lines.append(f"no span above the noise floor{floor}")
        return lines


class Explanation(list):
    """For each part of the answer, the prompt spans that significantly caused it (a list of
    PartExplanation, printed as a person reads it)."""

    unit: str = ""

    def __repr__(self) -> str:
        lines = [f"caused by, in {self.unit} (spans above each sentence's noise floor, most influential first):"]
        for row in self:
            lines.append(f"[{row.part.index}] {one_line(row.part.text, 70)!r}")
            lines += [f"    {line}" for line in row.lines()]
        return "\n".join(lines) if self else "(no answer parts)"

    def as_dict(self, matrix: AnswerMatrix) -> dict:
        """The explanation and the matrix behind it, as JSON data (`show --by-sentence --json`)."""
        def number(x):
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "unit": self.unit,
            "spans": [s.model_dump(include={"index", "start", "end", "text"}) for s in matrix.spans],
            "parts": [{"index": r.part.index, "start": r.part.start, "end": r.part.end, "text": r.part.text,
                       "kind": r.part.kind, "noise_floor": r.floor, "not_scored": r.why,
                       "causes": [{"span": c.span.index, "score": c.score, "stderr": c.stderr} for c in r.causes],
                       "unrefined_groups": [{"spans": [g.start, g.end], "score": g.score} for g in r.unrefined]}
                      for r in self],
            "scores": [[number(x) for x in row] for row in matrix.scores],
            "significant": [list(row) for row in matrix.significant],
        }

    def _repr_html_(self) -> str:
        rows = []
        for row in self:
            causes = "<br>".join(safe_html_text(line) for line in row.lines())
            rows.append(f"<tr><td style=\"text-align:left\">{safe_html_text(one_line(row.part.text, 90))}</td>"
                        f"<td style=\"text-align:left\">{causes}</td></tr>")
        return (f"<table><thead><tr><th style=\"text-align:left\">answer part</th><th style=\"text-align:left\">"
                f"caused by ({safe_html_text(self.unit)})</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def answer_matrix(record: RunRecord, bootstrap: int | None = None) -> AnswerMatrix:
    """Every answer part retargeted (raises UsageError where the run stored too little).
    `bootstrap`: the surrogate's resamples (None: its own; 0: weights only, a live view's).
    A part no token of the answer covers has no record (None) and a row of NaN, and says why."""
    import numpy as np

    from ..core.errors import UsageError
    from ..stages.retarget import parts_of, retarget

    parts = [AnswerPart.of(p) for p in parts_of(record)]
    records, unscored = [], {}
    for p in parts:
        try:
            records.append(retarget(record, (p.start, p.end), bootstrap=bootstrap))
        except UsageError as exc:  # a part between the model's tokens: nothing measured it
            records.append(None)
            unscored[p.index] = str(exc)
    n = len(record.spans)
    scores, stderr = np.full((len(parts), n), np.nan), np.full((len(parts), n), np.nan)
    significant = np.full((len(parts), n), None, dtype=object)
    for row, r in enumerate(records):
        for s in r.attribution if r is not None else ():
            scores[row, s.index] = s.score
            stderr[row, s.index] = np.nan if s.stderr is None else s.stderr
            significant[row, s.index] = s.significant
    unit = next((r.score_unit for r in records if r is not None), record.score_unit)
    return AnswerMatrix(parts, list(record.spans), scores, stderr, significant, unit, records, unscored)


def explain(matrix: AnswerMatrix) -> Explanation:
    out = Explanation()
    out.unit = matrix.unit
    for part, r in zip(matrix.parts, matrix.records, strict=True):
        if r is None:
            out.append(PartExplanation(part, [], None, why=matrix.unscored[part.index]))
            continue
        floor = r.noise.floor if r.noise else None
        causes = [Cause(matrix.spans[s.index], s.score, s.stderr) for s in rank(r.attribution) if s.significant]
        out.append(PartExplanation(part, causes, floor, unrefined_groups(r, floor)))
    return out


def unrefined_groups(record: RunRecord, floor: float | None) -> list[Group]:
    """The groups a hierarchical pass did not refine whose score for this part, all their spans
    deleted together, is above the floor: a cause lies in them, never measured alone."""
    seen = {}
    for s in record.attribution:
        if not s.resolved and s.group not in seen:
            seen[s.group] = s.score * (s.group[1] - s.group[0])
    groups = [Group(a, b, total) for (a, b), total in seen.items() if floor is None or total > floor]
    return sorted(groups, key=lambda g: -g.score)


def drives(record: RunRecord, matrix: AnswerMatrix | None) -> dict[int, AnswerPart]:
    """For an untargeted run, the answer part each span moves most, where that is above the part's
    noise floor.

    Only a run that scored the whole answer, of more than one part, has parts to tell apart; a
    span none of whose cells is above its part's floor drives none, and a share of a group a
    hierarchical pass did not refine (never measured alone) drives none. Judged on the weights
    and the floor alone, so the verdict is the same with or without the surrogate's bootstrap.
    """
    if record.target is not None or matrix is None or len(matrix.parts) < 2:
        return {}
    floors = [None if r is None or r.noise is None else r.noise.floor for r in matrix.records]
    out = {}
    for i in range(len(record.spans)):
        best = None
        for row, floor in enumerate(floors):
            value = matrix.scores[row, i]
            above = matrix.significant[row, i] is not None and value > (floor if floor is not None else 0.0)
            if above and (best is None or value > matrix.scores[best, i]):
                best = row
        if best is not None:
            out[i] = matrix.parts[best]
    return out


def drives_of(record: RunRecord) -> dict[int, AnswerPart]:
    """`drives` of an untargeted run whose parts can be scored from what it stored; else none
    (a targeted run, a run saved before per-token log-probabilities were kept, a lost file).

    From the parts' weights alone (no bootstrap: a cell is judged against its part's noise
    floor only), so a default view of a long answer stays quick; `explain()` has the errors."""
    from ..stages.retarget import can_retarget

    if record.target is not None or can_retarget(record) is not None:
        return {}
    return drives(record, answer_matrix(record, bootstrap=0))


def drive_text(part: AnswerPart | None, width: int = 60) -> str:
    """How every view quotes the part a span drives (a table's "drives" column): "'The Pro is…'"."""
    return "" if part is None else repr(one_line(part.text, width))


def drive_label(part: AnswerPart | None, width: int = 60) -> str:
    """The same in running text: "drives: 'The BrightBox Pro is…'"."""
    return "" if part is None else f"drives: {drive_text(part, width)}"

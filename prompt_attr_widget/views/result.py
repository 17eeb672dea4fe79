"""The Attribution: what `attribute()` and `load_run()` return.

A thin, read-only view over a run record, so a live result and one loaded
from disk are the same object with the same methods and the same output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.schema import RunRecord, Target, rank
from ..core.text import one_line
from .export import dump_json
from .html import heatmap_html
from .parts import (
    AnswerMatrix,
    AnswerPart,
    Explanation,
    answer_matrix,
    drive_label,
    drives_of,
    explain,
)
from .scale import run_notes, verdict


@dataclass(frozen=True, repr=False)
class SpanResult:
    index: int
    start: int
    end: int
    text: str
    score: float | None  # None: never measured (the run stopped first)
    resolved: bool
    ablated_output: str | None  # None also under the log-probability scorer (nothing regenerated)
    stderr: float | None = None  # surrogate runs: bootstrap standard error of the score
    significant: bool | None = None  # above the noise floor and not refuted by the behavioural check
    behaviour: str | None = None  # "changes" the answer, or moves its "probability" only (None: not checked)
    verdict: str = ""  # the two in words (views/scale.py: verdict)

    def __repr__(self) -> str:
        """One short line, as a person reads it: `result.top(3)` prints a list of these."""
        if self.score is None:
            measured = "not measured"
        else:
            spread = "" if self.stderr is None else f" ± {self.stderr:.3f}"
            measured = f"{self.score:.3f}{spread}{', ' + self.verdict if self.verdict else ''}"
        return f"<span {self.index} [{self.start}:{self.end}) {measured}: {one_line(self.text, 60)!r}>"


class Attribution:
    def __init__(self, record: RunRecord, runs_dir: Path | None = None):
        self.record = record
        self.runs_dir = runs_dir
        self.reproduction = None  # set by attribute(rerun=...): did the answers match the original's?
        by_id = {e.id: e for e in record.evaluations}
        scores = {s.index: s for s in record.attribution}
        spans = []
        for span in record.spans:
            s = scores.get(span.index)
            ev = by_id.get(s.evaluation) if s and s.evaluation is not None else None
            spans.append(
                SpanResult(
                    index=span.index,
                    start=span.start,
                    end=span.end,
                    text=span.text,
                    score=s.score if s else None,
                    resolved=s.resolved if s else False,
                    ablated_output=ev.output if ev else None,
                    stderr=s.stderr if s else None,
                    significant=s.significant if s else None,
                    behaviour=s.behaviour if s else None,
                    verdict=verdict(s),
                )
            )
        self.spans: list[SpanResult] = spans
        self._matrix: AnswerMatrix | None = None
        self._drives: dict[int, AnswerPart] | None = None

    # -- any part of the answer, from the stored evaluations (no model call) --------------------

    def for_target(self, target: str | tuple[int, int] | Target) -> Attribution:
        """The attribution of one part of the answer: its text, or a (start, end) character range.

        Computed from the run's stored evaluations with no model call, by the rules a run
        with `target=` follows (stages/retarget.py): equal to such a run with the same masks,
        for leave-one-out and the surrogate; a hierarchical run's groups are those its own
        score refined, as its notes say. An embedding run's parts are scored by target overlap.
        """
        from ..stages.retarget import retarget

        return Attribution(retarget(self.record, target), self.runs_dir)

    def answer_sentences(self) -> list[AnswerPart]:
        """The baseline answer in parts: sentences, each list item's lines, each line of code."""
        from ..stages.retarget import parts_of

        return [AnswerPart.of(p) for p in parts_of(self.record)]

    def matrix(self) -> AnswerMatrix:
        """Attribution of every answer sentence (rows) to every prompt span (columns); no model call."""
        if self._matrix is None:
            self._matrix = answer_matrix(self.record)
        return self._matrix

    def explain(self) -> Explanation:
        """For each answer sentence, the prompt spans that significantly caused it."""
        return explain(self.matrix())

    def drives(self) -> dict[int, AnswerPart]:
        """For an untargeted run, the answer sentence each span moves most (above that sentence's
        noise floor); computed once (views/parts.py: drives_of)."""
        if self._drives is None:
            self._drives = drives_of(self.record)
        return self._drives

    def matrix_error(self) -> str | None:
        """Why the answer's parts cannot be scored from this run, or None."""
        from ..stages.retarget import can_retarget

        return can_retarget(self.record)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def baseline(self) -> str | None:
        return self.record.baseline.output if self.record.baseline else None

    @property
    def method(self) -> str:
        return self.record.settings.method

    @property
    def scorer(self) -> str:
        return self.record.scorer

    @property
    def noise_floor(self) -> float | None:
        return self.record.noise.floor if self.record.noise else None

    def significant(self) -> list[SpanResult]:
        """The spans whose score rose above the noise floor, highest first."""
        return [s for s in self.top(len(self.spans)) if s.significant]

    def notes(self) -> list[str]:
        """How the run measured and how sure it is (estimator, unit, noise floor, checks)."""
        return run_notes(self.record)

    @property
    def spend_usd(self) -> float | None:
        """What the run counts as spent: billed, plus the worst case of calls it was killed during."""
        return self.record.spend.counted_usd

    @property
    def path(self) -> Path | None:
        return self.runs_dir / self.run_id if self.runs_dir else None

    def top(self, k: int = 5) -> list[SpanResult]:
        """The k spans with the highest scores (ties broken by position)."""
        measured = [s for s in self.spans if s.score is not None]
        return rank(measured)[:k]

    def to_records(self) -> list[dict]:
        """One dict per span; `drives`: the answer sentence it moves most (untargeted runs), or None."""
        drives = self.drives()
        return [{**asdict(s), "drives": getattr(drives.get(s.index), "text", None)} for s in self.spans]

    def to_dataframe(self):
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from None
        return pd.DataFrame.from_records(self.to_records(), index="index")

    def to_json(self) -> str:
        return dump_json(self.record)

    def to_csv(self, table: str = "spans") -> str:
        """The spans (with scores) or the evaluations as CSV."""
        from .export import to_csv

        return to_csv(self.record, table, drives=self.drives())

    def report_html(self) -> str:
        """A standalone HTML report of the run: opens offline, loads nothing."""
        from .export import run_report

        return run_report(self.record)

    def _repr_html_(self) -> str:
        return heatmap_html(self.record, drives=self.drives())

    def __repr__(self) -> str:
        top = self.top(1)
        best = f", top span {top[0].index} ({top[0].score:.3f})" if top and top[0].score > 0 else ""
        if top and top[0].significant is False:
            best += " " + top[0].verdict.split(":")[0]
        elif top and top[0].index in self.drives():
            best += f", {drive_label(self.drives()[top[0].index], 40)}"
        return (
            f"<Attribution {self.run_id} {self.status}: {len(self.spans)} spans, "
            f"{len(self.record.evaluations)} evaluations, model {self.record.backend.model}{best}>"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, Attribution) and self.record == other.record

    __hash__ = None

"""Compare two runs: what a prompt edit did to the spans, the scores and the answer.

Prompt engineering is iteration, so the question after an edit is "what did
it change?". Spans of the two runs are aligned by their text (difflib over
whitespace-normalised span texts): a span is `same`, `changed` (edited in
place), `added` or `removed`. Aligned spans get a score delta, but only when
both runs measured in the same unit; otherwise the delta is left out rather
than comparing log-probabilities with distances. The answers are diffed word
by word, and config, model fingerprint, spend and latency differences are
listed. Nothing here calls a model.
"""

from __future__ import annotations

import difflib
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .render import safe_terminal_text
from .runs import read_run
from .schema import RunRecord

# Config keys that never change what a run computes (how it ran, where it was saved).
OPERATIONAL = frozenset({"concurrency", "rpm", "timeout", "max_retries", "budget", "cache", "label", "allow_insecure"})


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


@dataclass
class Comparison:
    run_a: str
    run_b: str
    same_prompt: bool
    unit_a: str
    unit_b: str
    comparable_scores: bool
    spans: list[AlignedSpan]
    baseline_a: str | None
    baseline_b: str | None
    baseline_diff: list[tuple[str, str]]  # (op, words): op in equal, insert, delete
    config_changes: dict[str, tuple] = field(default_factory=dict)
    model_changes: dict[str, tuple] = field(default_factory=dict)
    spend_usd: tuple[float | None, float | None] = (None, None)
    calls: tuple[int, int] = (0, 0)
    total_ms: tuple[float | None, float | None] = (None, None)

    @property
    def same_answer(self) -> bool:
        return self.baseline_a == self.baseline_b

    def cost_line(self, arrow: str = "→") -> str:
        """Spend, calls and time, A to B (the text report passes "->" for plain terminals)."""
        from .cost import usd

        return (f"spend {usd(self.spend_usd[0])} {arrow} {usd(self.spend_usd[1])}, "
                f"calls {self.calls[0]} {arrow} {self.calls[1]}, "
                f"time {_secs(self.total_ms[0])} {arrow} {_secs(self.total_ms[1])}")

    def moved(self, k: int = 5) -> list[AlignedSpan]:
        """The aligned spans whose score moved most (largest |delta|), edits first on ties."""
        rows = [r for r in self.spans if r.delta is not None]
        return sorted(rows, key=lambda r: (-abs(r.delta), r.status == "same"))[:k]

    def to_dict(self) -> dict:
        return asdict(self) | {"same_answer": self.same_answer}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def __str__(self) -> str:
        return comparison_text(self)

    def _repr_html_(self) -> str:
        return comparison_html(self)

    def widget(self):
        """The side-by-side widget view (Jupyter)."""
        from .widget import CompareWidget

        return CompareWidget(self)

    def report_html(self) -> str:
        """A standalone HTML report of the comparison: opens offline, loads nothing."""
        from .export import comparison_report

        return comparison_report(self)


@dataclass
class ABResult:
    """Two variants of a prompt attributed under identical settings, and what the edit did."""

    a: object  # Attribution
    b: object
    comparison: Comparison

    def edits(self) -> list[AlignedSpan]:
        """The spans the edit touched (changed, added, removed), the most influential first.

        A span's score is how much deleting it moves its own run's answer, so
        an edited span with a high score in B is one whose new wording the
        answer leans on."""
        rows = [r for r in self.comparison.spans if r.status != "same"]
        return sorted(rows, key=lambda r: -max(abs(r.score_a or 0), abs(r.score_b or 0)))

    def __str__(self) -> str:
        lines = [f"A/B: {self.comparison.run_a} (A) vs {self.comparison.run_b} (B); "
                 f"{'same answer' if self.comparison.same_answer else 'the answer changed'}"]
        for r in self.edits():
            text = safe_terminal_text(" ".join((r.text_b or r.text_a or "").split()))[:60]
            lines.append(f"  {r.status:<8} A {_num(r.score_a):>7}  B {_num(r.score_b):>7}  {text}")
        lines.append("answer: " + " ".join(
            {"equal": w, "delete": f"[-{w}-]", "insert": f"{{+{w}+}}"}[op] for op, w in self.comparison.baseline_diff
        ))
        return safe_terminal_text("\n".join(lines))

    def _repr_html_(self) -> str:
        return comparison_html(self.comparison)


def compare(run_a: str | RunRecord, run_b: str | RunRecord, runs_dir: str | Path | None = None) -> Comparison:
    """Compare two runs (ids, prefixes, 'latest', or records); no model calls."""
    from .config import runs_dir as resolve_runs_dir

    folder = resolve_runs_dir(runs_dir)
    a = run_a if isinstance(run_a, RunRecord) else read_run(run_a, folder)
    b = run_b if isinstance(run_b, RunRecord) else read_run(run_b, folder)
    return compare_records(a, b)


def compare_records(a: RunRecord, b: RunRecord) -> Comparison:
    comparable = a.score_unit == b.score_unit
    return Comparison(
        run_a=a.run_id,
        run_b=b.run_id,
        same_prompt=a.prompt_sha256 == b.prompt_sha256,
        unit_a=a.score_unit,
        unit_b=b.score_unit,
        comparable_scores=comparable,
        spans=align_spans(a, b, comparable),
        baseline_a=a.baseline.output if a.baseline else None,
        baseline_b=b.baseline.output if b.baseline else None,
        baseline_diff=word_diff(a.baseline.output if a.baseline else "", b.baseline.output if b.baseline else ""),
        config_changes=_changes(_computing(a.config), _computing(b.config)),
        model_changes=_changes(_model(a), _model(b)),
        spend_usd=(a.spend.usd, b.spend.usd),
        calls=(a.spend.calls, b.spend.calls),
        total_ms=(a.timings_ms.get("total_ms"), b.timings_ms.get("total_ms")),
    )


def align_spans(a: RunRecord, b: RunRecord, comparable: bool) -> list[AlignedSpan]:
    """Spans of A and B matched by text; an edited span pairs with the one it replaced."""
    score_a, score_b = _scores(a), _scores(b)
    key_a, key_b = [_norm(s.text) for s in a.spans], [_norm(s.text) for s in b.spans]
    rows: list[AlignedSpan] = []

    def row(status, i, j):
        sa = score_a.get(i) if i is not None else None
        sb = score_b.get(j) if j is not None else None
        delta = sb - sa if comparable and sa is not None and sb is not None else None
        rows.append(AlignedSpan(
            status, i, j, a.spans[i].text if i is not None else None, b.spans[j].text if j is not None else None,
            sa, sb, delta,
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


def word_diff(text_a: str, text_b: str) -> list[tuple[str, str]]:
    """The two answers' difference, word by word: (equal | delete | insert, words)."""
    wa, wb = text_a.split(), text_b.split()
    out: list[tuple[str, str]] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op in ("equal", "delete", "replace") and a1 > a0:
            out.append(("equal" if op == "equal" else "delete", " ".join(wa[a0:a1])))
        if op in ("insert", "replace") and b1 > b0:
            out.append(("insert", " ".join(wb[b0:b1])))
    return out


def _scores(record: RunRecord) -> dict[int, float]:
    return {s.index: s.score for s in record.attribution}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _computing(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in OPERATIONAL}


def _model(record: RunRecord) -> dict:
    b = record.backend
    return {"backend": b.backend, "model": b.model, "embed_model": b.embed_model, "base_url": b.base_url,
            **{f"fingerprint.{k}": v for k, v in b.fingerprint.items()}, "library_version": record.library_version}


def _changes(a: dict, b: dict) -> dict[str, tuple]:
    return {k: (a.get(k), b.get(k)) for k in sorted({*a, *b}) if a.get(k) != b.get(k)}


@dataclass
class Reproduction:
    """Did a re-run give the same answers as the run it repeated? (a determinism check)"""

    original: str
    rerun: str
    baseline_same: bool
    matched: int  # evaluations with the same answer (or log-probability within 1e-6)
    differed: list[list[int]]  # the deleted spans of evaluations whose answers differ
    missing: int  # evaluations of one run that the other did not make
    model_changes: dict[str, tuple] = field(default_factory=dict)

    @property
    def deterministic(self) -> bool:
        return self.baseline_same and not self.differed and not self.missing

    def __str__(self) -> str:
        verdict = "outputs match" if self.deterministic else "outputs DIFFER"
        lines = [
            f"re-run {self.rerun} of {self.original}: {verdict}: baseline "
            f"{'same' if self.baseline_same else 'different'}, {self.matched} evaluations identical, "
            f"{len(self.differed)} different, {self.missing} not in both",
        ]
        lines += [f"  differs with spans {d} deleted" for d in self.differed[:10]]
        lines += [f"  model {safe_terminal_text(k)}: {safe_terminal_text(repr(a))} -> {safe_terminal_text(repr(b))}"
                  for k, (a, b) in self.model_changes.items()]
        return "\n".join(lines)


def reproduction(original: RunRecord, rerun: RunRecord) -> Reproduction:
    """Evaluation by evaluation (same deleted spans, purpose and repeat): same answers?"""

    def key(e):
        return (tuple(e.dropped), e.purpose, e.repeat)

    def same(x, y) -> bool:
        if x.output is not None or y.output is not None:
            return x.output == y.output
        return x.target_logprob is not None and y.target_logprob is not None and abs(x.target_logprob - y.target_logprob) <= 1e-6

    first, second = {key(e): e for e in original.evaluations}, {key(e): e for e in rerun.evaluations}
    shared = first.keys() & second.keys()
    differed = sorted(list(k[0]) for k in shared if not same(first[k], second[k]))
    return Reproduction(
        original=original.run_id,
        rerun=rerun.run_id,
        baseline_same=(original.baseline and original.baseline.output) == (rerun.baseline and rerun.baseline.output),
        matched=len(shared) - len(differed),
        differed=differed,
        missing=len(first.keys() ^ second.keys()),
        model_changes=_changes(_model(original), _model(rerun)),
    )


# --- renderings ----------------------------------------------------------------------------------

_MARK = {"same": " ", "changed": "~", "added": "+", "removed": "-"}


def _num(value: float | None, signed: bool = False) -> str:
    return "—" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def comparison_text(c: Comparison) -> str:
    """A terminal report: every control character of a prompt or answer is neutralised."""
    t = safe_terminal_text
    lines = [
        f"A {c.run_a}  vs  B {c.run_b}: {'same prompt' if c.same_prompt else 'prompts differ'}, "
        f"{'same answer' if c.same_answer else 'answers differ'}",
    ]
    if not c.comparable_scores:
        lines.append(f"scores not comparable: A in {c.unit_a}, B in {c.unit_b} (no deltas)")
    lines.append("")
    for r in c.spans:
        text = r.text_b if r.text_b is not None else r.text_a
        lines.append(f"{_MARK[r.status]} {_num(r.score_a):>7} {_num(r.score_b):>7} {_num(r.delta, True):>7}  "
                     f"{t(' '.join((text or '').split()))[:70]}")
    lines += ["", "answer A: " + t(c.baseline_a or "(none)"), "answer B: " + t(c.baseline_b or "(none)")]
    for title, changes in (("config", c.config_changes), ("model", c.model_changes)):
        for key, (va, vb) in changes.items():
            lines.append(f"{title} {t(key)}: {t(repr(va))} -> {t(repr(vb))}")
    lines.append(c.cost_line("->"))
    return "\n".join(lines)


def comparison_html(c: Comparison) -> str:
    """Static HTML (notebook `_repr_html_` and reports); every prompt and answer text is escaped."""
    e = html.escape
    colours = {"same": "transparent", "changed": "rgba(234,179,8,.25)", "added": "rgba(34,197,94,.25)",
               "removed": "rgba(239,68,68,.2)"}
    rows = "".join(
        f'<tr class="pa-cmp-{r.status}" style="background:{colours[r.status]}"><td>{_MARK[r.status]}</td>'
        f"<td>{e(r.text_a or '')}</td><td>{e(r.text_b or '')}</td><td>{_num(r.score_a)}</td>"
        f"<td>{_num(r.score_b)}</td><td>{_num(r.delta, True)}</td></tr>"
        for r in c.spans
    )
    answer = "".join(
        f"<{tag}>{e(words)}</{tag}> " if tag else f"{e(words)} "
        for op, words in c.baseline_diff
        for tag in [{"insert": "ins", "delete": "del"}.get(op, "")]
    )
    changes = "".join(
        f"<li>{e(title)} <code>{e(key)}</code>: {e(repr(va))} → {e(repr(vb))}</li>"
        for title, ch in (("config", c.config_changes), ("model", c.model_changes))
        for key, (va, vb) in ch.items()
    )
    note = "" if c.comparable_scores else f"<p>Scores not comparable: A in {e(c.unit_a)}, B in {e(c.unit_b)}.</p>"
    return (
        f'<div class="pa-compare"><p><b>A</b> {e(c.run_a)} vs <b>B</b> {e(c.run_b)}: '
        f"{'same prompt' if c.same_prompt else 'prompts differ'}, "
        f"{'same answer' if c.same_answer else 'answers differ'}</p>{note}"
        '<table><thead><tr><th></th><th>span in A</th><th>span in B</th><th>A</th><th>B</th><th>Δ</th></tr></thead>'
        f"<tbody>{rows}</tbody></table><p>Answer: {answer}</p><ul>{changes}</ul>"
        f"<p>{html.escape(c.cost_line())}</p></div>"
    )


def _secs(ms: float | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.2f}s"

"""Compare two runs: what a prompt edit did to the spans, the scores and the answer.

Prompt engineering is iteration, so the question after an edit is "what did
it change?". The alignment and the answer diff are stages/align.py; here
they become a `Comparison` with config, model fingerprint, spend and
latency differences, and its text, HTML and widget views. Both runs are
coloured on one heat scale (views/scale.py) when they measure in one unit,
so a colour means the same score on either side; spans below their run's
noise floor stay uncoloured in every view. A re-run's
`Reproduction` (did the answers match?) lives here too. Nothing here calls
a model or reads the disk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..core import options
from ..core.schema import RunRecord
from ..core.text import safe_html_text, safe_terminal_text, usd
from ..stages.align import AlignedSpan, align_spans, changes, word_diff
from .scale import heat_css, paint, scale_top

# Config keys that never change what a run computes (how it ran, what it is called): from the options table.
OPERATIONAL = frozenset(options.OPERATIONAL)




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
    noise_floor: tuple[float | None, float | None] = (None, None)

    @property
    def same_answer(self) -> bool:
        return self.baseline_a == self.baseline_b

    def scale_tops(self) -> tuple[float, float]:
        """The heat scale's top for A and for B: one top shared by both runs when they
        measure in one unit, else (units differ) each run's own."""
        if self.comparable_scores:
            top = scale_top(x for r in self.spans for x in (r.score_a, r.score_b))
            return top, top
        return scale_top(r.score_a for r in self.spans), scale_top(r.score_b for r in self.spans)

    def paints(self) -> list[tuple[tuple[str, bool], tuple[str, bool]]]:
        """Per aligned span, what A's and B's side draw: (CSS background, muted) from views/scale.py."""
        top_a, top_b = self.scale_tops()
        return [(paint(r.score_a, r.significant_a, top_a), paint(r.score_b, r.significant_b, top_b)) for r in self.spans]

    def legend(self) -> dict:
        """The heat legend: its texts and its two end colours."""
        (top_a, top_b), unit = self.scale_tops(), self.unit_a
        floors = [f"{side} {f:.3f}" for side, f in zip("AB", self.noise_floor, strict=True) if f is not None]
        note = f"uncoloured: below the noise floor ({', '.join(floors)})" if floors else "no noise floor measured"
        if self.comparable_scores:
            high, scale = f"{top_a:.3f}{f' {unit}' if unit else ''}", "one scale for both runs"
        else:
            high, scale = f"A {top_a:.3f} {self.unit_a} · B {top_b:.3f} {self.unit_b}", "each run on its own scale"
        return {"low": "score 0", "high": high, "note": f" · {scale}; {note}", "colours": [heat_css(0.0), heat_css(1.0)]}

    def cost_line(self, arrow: str = "→") -> str:
        """Spend, calls and time, A to B (the text report passes "->" for plain terminals)."""
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
        config_changes=changes(_computing(a), _computing(b)),
        model_changes=changes(_model(a), _model(b)),
        spend_usd=(a.spend.counted_usd, b.spend.counted_usd),
        calls=(a.spend.calls, b.spend.calls),
        total_ms=(a.timings_ms.get("total_ms"), b.timings_ms.get("total_ms")),
        noise_floor=(a.noise.floor if a.noise else None, b.noise.floor if b.noise else None),
    )










def _computing(record: RunRecord) -> dict:
    """The options that decide what a run computes (an older run's missing ones at their defaults)."""
    return record.settings.model_dump(mode="json", exclude=OPERATIONAL)


def _model(record: RunRecord) -> dict:
    b = record.backend
    return {"backend": b.backend, "model": b.model, "embed_model": b.embed_model, "base_url": b.base_url,
            **{f"fingerprint.{k}": v for k, v in b.fingerprint.items()}, "library_version": record.library_version}




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
        model_changes=changes(_model(original), _model(rerun)),
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
    for title, found in (("config", c.config_changes), ("model", c.model_changes)):
        for key, (va, vb) in found.items():
            lines.append(f"{title} {t(key)}: {t(repr(va))} -> {t(repr(vb))}")
    lines.append(c.cost_line("->"))
    return "\n".join(lines)


def _heat_cell(text: str | None, score: float | None, drawn: tuple[str, bool]) -> str:
    """One side's span text, on its heat colour; greyed and uncoloured below the noise floor."""
    if text is None:
        return "<td></td>"
    css, muted = drawn
    if muted:
        style, cls, note = "color:#6b7280", "pa-span pa-noise", " (below the noise floor)"
    else:
        style, cls, note = (f"background:{css};border-radius:3px" if css else ""), "pa-span", ""
    title = f"score {_num(score)}{note}"
    return f'<td><span class="{cls}" style="{style}" title="{title}">{safe_html_text(text)}</span></td>'


def comparison_html(c: Comparison) -> str:
    """Static HTML (notebook `_repr_html_` and reports); every prompt and answer text goes
    through `safe_html_text` (escaped, bidi controls inert)."""
    e = safe_html_text
    colours = {"same": "transparent", "changed": "rgba(234,179,8,.25)", "added": "rgba(34,197,94,.25)",
               "removed": "rgba(239,68,68,.2)"}
    rows = "".join(
        f'<tr class="pa-cmp-{r.status}" style="background:{colours[r.status]}"><td>{_MARK[r.status]}</td>'
        f"{_heat_cell(r.text_a, r.score_a, pa)}{_heat_cell(r.text_b, r.score_b, pb)}<td>{_num(r.score_a)}</td>"
        f"<td>{_num(r.score_b)}</td><td>{_num(r.delta, True)}</td></tr>"
        for r, (pa, pb) in zip(c.spans, c.paints(), strict=True)
    )
    lg = c.legend()
    legend = f'<p style="color:#666">colour: {e(lg["low"])} (pale) to {e(lg["high"])} (dark red){e(lg["note"])}</p>'
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
        f"{'same answer' if c.same_answer else 'answers differ'}</p>{note}{legend}"
        '<table><thead><tr><th></th><th>span in A</th><th>span in B</th><th>A</th><th>B</th><th>Δ</th></tr></thead>'
        f"<tbody>{rows}</tbody></table><p>Answer: {answer}</p><ul>{changes}</ul>"
        f"<p>{e(c.cost_line())}</p></div>"
    )


def _secs(ms: float | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.2f}s"

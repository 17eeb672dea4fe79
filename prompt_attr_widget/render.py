"""Static renderings of a run: an escaped HTML heat-map and a terminal heat-map.

Prompt text is untrusted. In HTML every character of it goes through
`html.escape`, so `<script>` shows as text; in the terminal every control
character (ESC above all) and bidi override is shown as a visible escape,
so a prompt can never move the cursor, recolour the screen or reorder text.
Output is deterministic: fixed number formats, no random ids, no times.

Noise is never shown as signal: a span whose score is not above the run's
noise floor (`significant is False`) gets no heat colour anywhere, and
every rendering states the estimator, the scorer's unit, the floor and the
faithfulness check, so a reader knows how sure the run is.
"""

from __future__ import annotations

import html
import re
from collections import Counter

from .schema import RunRecord, SpanScore

# C0 but tab and newline, DEL, C1, every bidi control (marks, embeddings,
# overrides, isolates), and lone surrogates (which would crash print()).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def scale_max(record: RunRecord) -> float:
    """The colour scale's top: the run's highest score (at least 0.05, so noise stays pale)."""
    return max([0.05, *(s.score for s in record.attribution)])


def heat(s: SpanScore | None, top: float) -> float | None:
    """Colour intensity 0-1 of a span, or None for no colour (unmeasured, or noise)."""
    if s is None or s.significant is False:
        return None
    return _intensity(s.score, top)


def run_notes(record: RunRecord) -> list[str]:
    """How the run measured and how sure it is, one short sentence each."""
    c = record.config
    method = c.get("method", "hierarchical")
    fit = record.surrogate
    if method == "surrogate" and fit:
        r2 = "n/a" if fit.r2 is None else f"{fit.r2:.2f}"
        notes = [f"estimator: surrogate (LASSO on {fit.masks} random masks, R² {r2}, ± = bootstrap s.e.)"]
    elif method == "loo" or len(record.spans) <= 2 / c.get("group_fraction", 0.2):
        few = "" if method == "loo" else " (too few spans for hierarchical passes)"
        notes = [f"estimator: leave-one-out{few}"]
    else:
        notes = [f"estimator: hierarchical (refine threshold {c.get('refine_threshold', 0.85):g})"]
    target = f" of the target {record.target.text!r}" if record.target else ""
    notes.append(f"score: {record.score_unit}{target}")
    if record.noise:
        n = record.noise
        above = sum(bool(s.significant) for s in record.attribution)
        source = f"largest gap between {n.repeats} answers to the unchanged prompt" if n.samples else "deterministic backend"
        notes.append(
            f"noise floor {n.floor:.3f} ({source}, minimum effect {n.min_effect:g}): "
            f"{above} of {len(record.spans)} spans above it"
        )
    f = record.faithfulness
    if f and f.top_k_score is not None:
        rand = f"{sum(f.random_scores) / len(f.random_scores):.3f}" if f.random_scores else "n/a"
        line = f"check: deleting the top {f.k} together scores {f.top_k_score:.3f}; {f.k} random spans {rand}"
        if f.lds is not None:
            line += f"; LDS {f.lds:.2f} on {f.heldout} held-out masks"
        notes.append(line)
    if record.redacted:
        notes.append(redaction_note(record))
    return notes


def redaction_note(record: RunRecord) -> str:
    """What --redact masked, by kind (never the secrets), and what that costs."""
    calls = [c for c in [record.baseline, *record.evaluations] if c is not None]
    kinds = Counter(r.kind for r in [*record.redactions, *(r for c in calls for r in c.redactions)])
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none found"
    return f"redacted: secrets masked in the stored run ({found}); not reproducible from the stored prompt"


def _plus_minus(s: SpanScore) -> str:
    return "" if s.stderr is None else f" ± {s.stderr:.3f}"


def _signal(s: SpanScore) -> str:
    return {True: "yes", False: "noise", None: "-"}[s.significant]


def _intensity(score: float, top: float) -> float:
    return max(0.0, min(1.0, score / top))


def heatmap_html(record: RunRecord, top_k: int = 5) -> str:
    scores = {s.index: s for s in record.attribution}
    top = scale_max(record)
    parts, cursor = [], 0
    for span in record.spans:
        parts.append(html.escape(record.prompt[cursor : span.start]))
        s = scores.get(span.index)
        if s is None:
            parts.append(f'<span class="pa-span pa-pending" data-index="{span.index}">{html.escape(span.text)}</span>')
        else:
            level = heat(s, top)
            note = "" if s.resolved else " (share of an unrefined group)"
            if level is None:
                style, note = "color:inherit", note + " (below the noise floor)"
            else:
                style = f"background:rgba(220,38,38,{0.08 + 0.62 * level:.3f});border-radius:3px"
            cls = "pa-span" if level is not None else "pa-span pa-noise"
            parts.append(
                f'<span class="{cls}" data-index="{span.index}" style="{style}" '
                f'title="span {span.index}: score {s.score:.3f}{_plus_minus(s)}{note}">{html.escape(span.text)}</span>'
            )
        cursor = span.end
    parts.append(html.escape(record.prompt[cursor:]))
    ranked = sorted(record.attribution, key=lambda s: (-s.score, s.index))[:top_k]
    rows = "".join(
        f"<tr><td>{r.index}</td><td>{r.score:.3f}{'' if r.resolved else '*'}{_plus_minus(r)}</td>"
        f"<td>{_signal(r)}</td><td>{html.escape(_one_line(record.spans[r.index].text, 80))}</td></tr>"
        for r in ranked
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in run_notes(record))
    baseline = html.escape(record.baseline.output) if record.baseline else "(no baseline)"
    status = html.escape(record.status + (f": {record.reason}" if record.reason else ""))
    return (
        '<div class="prompt-attr-static" style="font-family:system-ui,sans-serif;font-size:13px">'
        f'<div><b>prompt_attr</b> run {html.escape(record.run_id)} · {html.escape(record.backend.model)}'
        f" · {status} · {len(record.evaluations)} evaluations</div>"
        f'<div style="margin:4px 0;color:#666">colour scale: 0 (pale) to {top:.3f} (dark red); '
        "uncoloured: below the noise floor</div>"
        f'<ul class="pa-notes" style="margin:2px 0;color:#555">{notes}</ul>'
        '<pre style="white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;'
        f'line-height:1.6;padding:8px;border:1px solid #ccc">{"".join(parts)}</pre>'
        f"<div><b>Baseline output</b></div><pre style=\"white-space:pre-wrap\">{baseline}</pre>"
        "<table><thead><tr><th>span</th><th>score</th><th>above noise</th><th>text</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        "</div>"
    )


def safe_terminal_text(text: str) -> str:
    """Show control characters and bidi overrides as visible escapes."""
    text = text.replace("\r\n", "\n")
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text)


def safe_json_text(text: str) -> str:
    """JSON text with the characters above as \\u escapes: the same document, safe to print.

    json.dumps(ensure_ascii=False) escapes C0 but leaves DEL, C1 (an 8-bit
    CSI is 0x9b) and bidi controls raw, and they only ever occur inside strings.
    """
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_SHADES = (None, 224, 217, 210, 203, 196)  # xterm-256 backgrounds, pale to strong red


def heatmap_terminal(record: RunRecord, color: bool = True) -> str:
    scores = {s.index: s for s in record.attribution}
    top = scale_max(record)
    out, cursor = [], 0
    for span in record.spans:
        out.append(safe_terminal_text(record.prompt[cursor : span.start]))
        text = safe_terminal_text(span.text)
        s = scores.get(span.index)
        level = heat(s, top)
        shade = None if level is None else _SHADES[round(level * (len(_SHADES) - 1))]
        if color and shade is not None:
            text = "\n".join(f"\x1b[48;5;{shade}m\x1b[30m{line}\x1b[0m" for line in text.split("\n"))
        elif not color:
            mark = "" if s is None or s.significant is not False else "~"
            text = f"[{mark}{s.score if s else 0.0:.2f}]{text}"
        out.append(text)
        cursor = span.end
    out.append(safe_terminal_text(record.prompt[cursor:]))
    return "".join(out)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def top_table(record: RunRecord, k: int = 5) -> str:
    ranked = sorted(record.attribution, key=lambda s: (-s.score, s.index))[:k]
    lines = [f"{'rank':>4}  {'span':>4}  {'score':>7}  {'±':>6}  {'signal':<5}  text"]
    for rank, s in enumerate(ranked, 1):
        mark = "" if s.resolved else "*"
        err = "" if s.stderr is None else f"{s.stderr:.3f}"
        text = safe_terminal_text(_one_line(record.spans[s.index].text, 60))
        lines.append(f"{rank:>4}  {s.index:>4}  {s.score:>6.3f}{mark:1}  {err:>6}  {_signal(s):<5}  {text}")
    if any(not s.resolved for s in ranked):
        lines.append("  * share of a group the hierarchical pass did not refine")
    lines += [f"  {safe_terminal_text(note)}" for note in run_notes(record)]
    return "\n".join(lines)

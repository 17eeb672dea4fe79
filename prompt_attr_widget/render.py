"""Static renderings of a run: an escaped HTML heat-map and a terminal heat-map.

Prompt text is untrusted. In HTML every character of it goes through
`html.escape`, so `<script>` shows as text; in the terminal every control
character (ESC above all) and bidi override is shown as a visible escape,
so a prompt can never move the cursor, recolour the screen or reorder text.
Output is deterministic: fixed number formats, no random ids, no times.
"""

from __future__ import annotations

import html
import re

from .schema import RunRecord

_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def scale_max(record: RunRecord) -> float:
    """The colour scale's top: the run's highest score (at least 0.05, so noise stays pale)."""
    return max([0.05, *(s.score for s in record.attribution)])


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
            alpha = 0.08 + 0.62 * _intensity(s.score, top)
            note = "" if s.resolved else " (share of an unrefined group)"
            parts.append(
                f'<span class="pa-span" data-index="{span.index}" '
                f'style="background:rgba(220,38,38,{alpha:.3f});border-radius:3px" '
                f'title="span {span.index}: score {s.score:.3f}{note}">{html.escape(span.text)}</span>'
            )
        cursor = span.end
    parts.append(html.escape(record.prompt[cursor:]))
    ranked = sorted(record.attribution, key=lambda s: (-s.score, s.index))[:top_k]
    rows = "".join(
        f"<tr><td>{r.index}</td><td>{r.score:.3f}{'' if r.resolved else '*'}</td>"
        f"<td>{html.escape(_one_line(record.spans[r.index].text, 80))}</td></tr>"
        for r in ranked
    )
    baseline = html.escape(record.baseline.output) if record.baseline else "(no baseline)"
    status = html.escape(record.status + (f": {record.reason}" if record.reason else ""))
    return (
        '<div class="prompt-attr-static" style="font-family:system-ui,sans-serif;font-size:13px">'
        f'<div><b>prompt_attr</b> run {html.escape(record.run_id)} · {html.escape(record.backend.model)}'
        f" · {status} · {len(record.evaluations)} evaluations</div>"
        f'<div style="margin:4px 0;color:#666">colour scale: 0 (pale) to {top:.3f} (dark red)</div>'
        '<pre style="white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;'
        f'line-height:1.6;padding:8px;border:1px solid #ccc">{"".join(parts)}</pre>'
        f"<div><b>Baseline output</b></div><pre style=\"white-space:pre-wrap\">{baseline}</pre>"
        f"<table><thead><tr><th>span</th><th>score</th><th>text</th></tr></thead><tbody>{rows}</tbody></table>"
        "</div>"
    )


def safe_terminal_text(text: str) -> str:
    """Show control characters and bidi overrides as visible escapes."""
    text = text.replace("\r\n", "\n")
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text)


_SHADES = (None, 224, 217, 210, 203, 196)  # xterm-256 backgrounds, pale to strong red


def heatmap_terminal(record: RunRecord, color: bool = True) -> str:
    scores = {s.index: s.score for s in record.attribution}
    top = scale_max(record)
    out, cursor = [], 0
    for span in record.spans:
        out.append(safe_terminal_text(record.prompt[cursor : span.start]))
        text = safe_terminal_text(span.text)
        shade = _SHADES[round(_intensity(scores.get(span.index, 0.0), top) * (len(_SHADES) - 1))]
        if color and shade is not None:
            text = "\n".join(f"\x1b[48;5;{shade}m\x1b[30m{line}\x1b[0m" for line in text.split("\n"))
        elif not color:
            text = f"[{scores.get(span.index, 0.0):.2f}]{text}"
        out.append(text)
        cursor = span.end
    out.append(safe_terminal_text(record.prompt[cursor:]))
    return "".join(out)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def top_table(record: RunRecord, k: int = 5) -> str:
    ranked = sorted(record.attribution, key=lambda s: (-s.score, s.index))[:k]
    lines = [f"{'rank':>4}  {'span':>4}  {'score':>6}  text"]
    for rank, s in enumerate(ranked, 1):
        mark = "" if s.resolved else "*"
        lines.append(f"{rank:>4}  {s.index:>4}  {s.score:>6.3f}{mark:1} {safe_terminal_text(_one_line(record.spans[s.index].text, 70))}")
    if any(not s.resolved for s in ranked):
        lines.append("  * share of a group the hierarchical pass did not refine")
    return "\n".join(lines)

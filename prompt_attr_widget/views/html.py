"""The static HTML heat-map of a run (notebook `_repr_html_`, nbconvert, reports).

Prompt text is untrusted: every character of it goes through
`safe_html_text` (core/text.py), so `<script>` shows as text and a bidi
control reorders nothing (`user\u202eexe.txt` reads in its logical order,
the control marked where it sits). Output is deterministic (fixed number formats,
no random ids, no times), so a notebook's stored output is stable. Colours,
significance and ranking come from views/scale.py, as in every view.
"""

from __future__ import annotations

from ..core.schema import RunRecord
from ..core.text import one_line, safe_html_text
from .parts import drive_text, drives_of
from .scale import (
    heat,
    heat_css,
    legend_note,
    plus_minus,
    run_notes,
    scale_max,
    signal,
    unrefined,
    verdict,
)

# Text reads from the left: Jupyter's and nbconvert's stylesheets right-align table cells.
LEFT = ' style="text-align:left"'

# A widget output JupyterLab and Notebook 7 cannot draw (the kernel that held its model is
# gone: "Error displaying widget: model not found") is hidden when its saved view follows it.
# Their widget renderer is a lumino Panel that gets the class jupyter-widgets only for an
# error; a drawn widget's panel never has it (nbconvert's widget divs are no Panel).
_HIDE_UNDRAWABLE = (
    "<style>.jp-OutputArea-child:has(> .lm-Panel.jp-OutputArea-output.jupyter-widgets)"
    ":has(+ .jp-OutputArea-child [data-prompt-attr-view]) { display: none; }</style>"
)


def saved_view_html(view_key: str, body: str) -> str:
    """A widget's saved view: the static `body` a notebook shows where the widget cannot be drawn.

    Jupyter front-ends keep a widget's model in the kernel and, by default,
    save none of it in the notebook, so a notebook reopened after its kernel
    is gone cannot draw the widget. Each displayed widget is therefore
    followed by this output: while the live view is on the page, its
    JavaScript hides this twin (js/common.js: hideSavedView, matching
    `view_key`); when it cannot be drawn, this shows and hides the error.
    """
    return f'<div class="prompt-attr-saved" data-prompt-attr-view="{safe_html_text(view_key)}">{_HIDE_UNDRAWABLE}{body}</div>'


def heatmap_html(record: RunRecord, top_k: int = 5, drives: dict | None = None) -> str:
    """`drives`: the answer part each span drives (views/parts.py), computed here when not given."""
    drives = drives_of(record) if drives is None else drives
    scores = {s.index: s for s in record.attribution}
    top = scale_max(record)
    parts, cursor = [], 0
    for span in record.spans:
        parts.append(safe_html_text(record.prompt[cursor : span.start]))
        s = scores.get(span.index)
        if s is None:
            parts.append(f'<span class="pa-span pa-pending" data-index="{span.index}">{safe_html_text(span.text)}</span>')
        else:
            intensity = heat(s, top)
            note = "" if s.resolved else " (share of an unrefined group)"
            note += f" ({verdict(s)})" if verdict(s) else ""
            if intensity is None:
                style = "color:inherit"
            else:
                style = f"background:{heat_css(intensity)};border-radius:3px"
            if not s.resolved:
                style += ";text-decoration:underline dotted"
            cls = "pa-span" if intensity is not None else "pa-span pa-noise"
            parts.append(
                f'<span class="{cls}" data-index="{span.index}" style="{style}" '
                f'title="span {span.index}: score {s.score:.3f}{plus_minus(s)}{note}">{safe_html_text(span.text)}</span>'
            )
        cursor = span.end
    parts.append(safe_html_text(record.prompt[cursor:]))
    ranked = record.ranked()[:top_k]
    driving = any(r.index in drives for r in ranked)
    rows = "".join(
        f"<tr><td>{r.index}</td><td>{r.score:.3f}{'' if r.resolved else '*'}{plus_minus(r)}</td>"
        f"<td>{signal(r)}</td><td{LEFT}>{safe_html_text(one_line(record.spans[r.index].text, 80))}</td>"
        + (f"<td{LEFT}>{safe_html_text(drive_text(drives.get(r.index)))}</td>" if driving else "")
        + "</tr>"
        for r in ranked
    )
    notes = "".join(f"<li>{safe_html_text(n)}</li>" for n in run_notes(record))
    key = legend_note(record.noise.floor if record.noise else None, unrefined(record))
    key = f"; {key}" if key else ""
    if any(not r.resolved for r in ranked):
        rows += f'<tr><td colspan="{4 + driving}"{LEFT}>* a share of a group the hierarchical pass did not refine</td></tr>'
    baseline = safe_html_text(record.baseline.output) if record.baseline else "(no baseline)"
    status = safe_html_text(record.status + (f": {record.reason}" if record.reason else ""))
    return (
        '<div class="prompt-attr-static" style="font-family:system-ui,sans-serif;font-size:13px">'
        f'<div><b>prompt_attr</b> run {safe_html_text(record.run_id)} · {safe_html_text(record.backend.model)}'
        f" · {status} · {len(record.evaluations)} evaluations</div>"
        f'<div style="margin:4px 0;color:#666">colour scale: 0 (pale) to {top:.3f} (dark red)'
        f"{safe_html_text(key)}</div>"
        f'<ul class="pa-notes" style="margin:2px 0;color:#555">{notes}</ul>'
        '<pre style="white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;'
        f'line-height:1.6;padding:8px;border:1px solid #ccc">{"".join(parts)}</pre>'
        f"<div><b>Baseline output</b></div><pre style=\"white-space:pre-wrap\">{baseline}</pre>"
        f"<table><thead><tr><th>span</th><th>score</th><th>signal</th><th{LEFT}>text</th>"
        + (f"<th{LEFT}>drives</th>" if driving else "") + "</tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        "</div>"
    )

"""Export a run or a comparison: CSV and JSON tables, and standalone HTML reports.

A report is one HTML file with its styles inline and nothing to fetch (no
script, no font, no image, and a Content-Security-Policy that forbids
loading anything), so it opens offline in any browser and can be mailed or
attached to a ticket. Every prompt and answer text in it goes through
`safe_html_text`: escaped, and with every bidi control inert and marked.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable

from ..core.schema import RunRecord
from ..core.text import safe_html_text, safe_json_text, safe_terminal_text
from .html import heatmap_html
from .parts import drives_of
from .scale import verdict

SPAN_COLUMNS = ("index", "start", "end", "text", "score", "stderr", "significant", "behaviour", "behaviour_note",
                "resolved", "drives")
EVALUATION_COLUMNS = ("id", "round", "purpose", "dropped", "score", "output", "target_logprob", "cosine",
                      "prompt_tokens", "completion_tokens", "cost_usd", "elapsed_ms", "cache_hit")
TABLES = ("spans", "evaluations")


def rows(record: RunRecord, table: str, drives: dict | None = None) -> list[dict]:
    """The rows of one table: spans (with their scores) or evaluations. `drives`: the answer
    sentence each span moves most (views/parts.py), computed here when not given."""
    if table == "spans":
        scores = {s.index: s for s in record.attribution}
        drives = drives_of(record) if drives is None else drives
        return [
            {**span.model_dump(include={"index", "start", "end", "text"}),
             "score": getattr(scores.get(span.index), "score", None),
             "stderr": getattr(scores.get(span.index), "stderr", None),
             "significant": getattr(scores.get(span.index), "significant", None),
             "behaviour": getattr(scores.get(span.index), "behaviour", None),
             "behaviour_note": getattr(scores.get(span.index), "behaviour_note", None),
             "resolved": getattr(scores.get(span.index), "resolved", None),
             "drives": getattr(drives.get(span.index), "text", None)}
            for span in record.spans
        ]
    if table == "evaluations":
        return [{k: (e.dropped if k == "dropped" else getattr(e, k)) for k in EVALUATION_COLUMNS} for e in record.evaluations]
    raise ValueError(f"unknown table {table!r}: {', '.join(TABLES)}")


def to_csv(record: RunRecord, table: str = "spans", drives: dict | None = None) -> str:
    """A CSV table; a cell a spreadsheet would run as a formula is quoted with a leading '."""
    columns = SPAN_COLUMNS if table == "spans" else EVALUATION_COLUMNS
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows(record, table, drives):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def to_json(record: RunRecord, table: str = "spans") -> str:
    return json.dumps(rows(record, table), indent=1, ensure_ascii=False)


def _cell(value) -> object:
    """CSV injection guard: text starting with = + - @ (or a tab/CR) is prefixed with '."""
    if isinstance(value, list):
        value = " ".join(map(str, value))
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def report_html(title: str, body_parts: Iterable[str]) -> str:
    """A complete, self-contained HTML document around already-escaped parts."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
        f"<title>{html.escape(safe_terminal_text(title))}</title>"  # no element in a title: escapes
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#111}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}"
        "ins{background:rgba(34,197,94,.3);text-decoration:none}del{background:rgba(239,68,68,.25)}</style>"
        f"</head><body><h1>{safe_html_text(title)}</h1>{''.join(body_parts)}"
        "<p style=\"color:#666\">made by prompt_attr</p></body></html>\n"
    )


def run_report(record: RunRecord) -> str:
    """A run as a standalone HTML page: the heat-map, notes, top spans and every span's score."""
    drives = drives_of(record)
    scores = {s.index: s for s in record.attribution}
    table = "".join(
        f"<tr><td>{r['index']}</td><td>{_number(r['score'])}</td>"
        f"<td>{_number(r['stderr'])}</td><td>{safe_html_text(verdict(scores.get(r['index'])))}</td>"
        f"<td>{safe_html_text(r['text'])}</td></tr>"
        for r in rows(record, "spans", drives)
    )
    return report_html(
        f"prompt_attr run {record.run_id}",
        [heatmap_html(record, drives=drives),
         "<h2>Every span</h2><table><thead><tr><th>span</th><th>score</th><th>±</th><th>signal</th>"
         f"<th>text</th></tr></thead><tbody>{table}</tbody></table>"],
    )


def comparison_report(comparison) -> str:
    """A comparison as a standalone HTML page."""
    return report_html(f"prompt_attr: {comparison.run_a} vs {comparison.run_b}", [comparison._repr_html_()])


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def dump_json(record: RunRecord) -> str:
    """The record as JSON for stdout (`--json`): readable Unicode, but no raw control character."""
    return safe_json_text(json.dumps(record.model_dump(mode="json"), indent=1, ensure_ascii=False))

"""The terminal heat-map and the top-spans table (colours from views/scale.py).

Every character of prompt text passes through `safe_terminal_text`, so no
escape sequence or bidi control in a prompt reaches the terminal.
"""

from __future__ import annotations

from ..core.schema import RunRecord
from ..core.text import one_line, safe_terminal_text
from .parts import drive_label, drives_of
from .scale import heat, legend_note, run_notes, scale_max, signal, unrefined

# xterm-256 backgrounds, pale to strong red; a level of 0 (or a little more) is the palest
# shade, not none, so the terminal colours exactly the spans every other view colours
_SHADES = (224, 224, 217, 210, 203, 196)


def heatmap_terminal(record: RunRecord, color: bool = True) -> str:
    scores = {s.index: s for s in record.attribution}
    top = scale_max(record)
    out, cursor = [], 0
    for span in record.spans:
        out.append(safe_terminal_text(record.prompt[cursor : span.start]))
        text = safe_terminal_text(span.text)
        s = scores.get(span.index)
        intensity = heat(s, top)
        shade = None if intensity is None else _SHADES[round(intensity * (len(_SHADES) - 1))]
        if color and shade is not None:
            text = "\n".join(f"\x1b[48;5;{shade}m\x1b[30m{line}\x1b[0m" for line in text.split("\n"))
        elif not color:
            mark = "" if s is None or s.significant is not False else "~"
            text = f"[{mark}{s.score if s else 0.0:.2f}]{text}"
        out.append(text)
        cursor = span.end
    out.append(safe_terminal_text(record.prompt[cursor:]))
    return "".join(out)


def top_table(record: RunRecord, k: int = 5, drives: dict | None = None) -> str:
    """The top spans; for an untargeted run each with the answer sentence it drives (`drives`,
    views/parts.py, computed here when not given)."""
    drives = drives_of(record) if drives is None else drives
    ranked = record.ranked()[:k]
    lines = [f"{'rank':>4}  {'span':>4}  {'score':>7}  {'±':>6}  {'signal':<10}  text"]
    for rank, s in enumerate(ranked, 1):
        mark = "" if s.resolved else "*"
        err = "" if s.stderr is None else f"{s.stderr:.3f}"
        text = safe_terminal_text(one_line(record.spans[s.index].text, 60))
        driven = drive_label(drives.get(s.index), 50)
        driven = f"\n{'':>36}{safe_terminal_text(driven)}" if driven else ""
        lines.append(f"{rank:>4}  {s.index:>4}  {s.score:>6.3f}{mark:1}  {err:>6}  {signal(s):<10}  {text}{driven}")
    floor = record.noise.floor if record.noise else None
    key = legend_note(floor, unrefined(record), marker="*")
    if key:  # what the heat-map leaves uncoloured (marked ~ without colour) and what * means
        lines.append(f"  {key.replace('uncoloured:', 'uncoloured (~ without colour):', 1)}")
    lines += [f"  {safe_terminal_text(note)}" for note in run_notes(record)]
    return "\n".join(lines)

"""Text safety and number formats shared by every view and message.

Prompt and answer text is untrusted: before it reaches a terminal, a log
line or a JSON document printed on a terminal, every control character
(ESC above all), bidi control and lone surrogate becomes a visible escape,
so a prompt can never move the cursor, recolour the screen or reorder text.
In HTML (`safe_html_text`) markup is escaped and each bidi control is
isolated and marked, the text kept exact.
Dollars are formatted here once, so every view shows the same figure.
"""

from __future__ import annotations

import html
import math
import re

# Every bidi control, as a regex class body: the Arabic letter mark, LRM and RLM,
# the embeddings and overrides (LRE RLE PDF LRO RLO) and the isolates (LRI RLI
# FSI PDI). js/widget.js and js/compare.js spell the same class (a test checks).
BIDI_CONTROLS = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")
# C0 but tab and newline, DEL, C1, every bidi control, and lone surrogates (which would crash print()).
_UNSAFE = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI_CONTROLS}\ud800-\udfff]")
# How a bidi control looks in HTML: a small dashed box where it sits. The `dir`
# attribute isolates it by the browser's own style sheet (even where a page strips
# style attributes), and the inline-block makes it a paragraph of its own, so it
# reorders nothing around it. widget.css draws the widgets' .pa-bidi the same way.
BIDI_MARK_STYLE = ("display:inline-block;min-width:0.45em;height:1em;vertical-align:text-bottom;"
                   "border:1px dashed #b45309;border-radius:2px;background:rgba(245,158,11,0.35)")


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


def safe_html_text(text: str) -> str:
    """Text for HTML: escaped (markup shows as text), and every bidi control inert.

    A bidi control would reorder what follows it: `user\u202eexe.txt` reads
    as "usertxt.exe". Each one is wrapped alone in a `pa-bidi` span (see
    BIDI_MARK_STYLE) whose title names it, so the text reads in its logical
    order and the reader sees where a control sits. The text itself stays
    exact (textContent, copy and paste). Every HTML view uses this.
    """
    return _BIDI.sub(_bidi_mark, html.escape(text))


def _bidi_mark(match: re.Match) -> str:
    return (f'<span class="pa-bidi" dir="ltr" title="{bidi_title(match.group())}" '
            f'style="{BIDI_MARK_STYLE}">{match.group()}</span>')


def bidi_title(char: str) -> str:
    """What a bidi control's mark says when pointed at (the widgets say the same)."""
    return f"U+{ord(char):04X}: a bidi control, shown here and not applied"


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def usd(amount: float | None) -> str:
    """Dollars with enough digits to be meaningful for tiny figures; no figure (None, NaN,
    infinite) is "unknown", never "$nan"."""
    if amount is None or not math.isfinite(amount):
        return "unknown"
    return f"${amount:.4f}" if amount == 0 or amount >= 0.01 else f"${amount:.6f}"

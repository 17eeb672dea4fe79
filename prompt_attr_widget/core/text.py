"""Text safety and number formats shared by every view and message.

Prompt and answer text is untrusted: before it reaches a terminal, a log
line or a JSON document printed on a terminal, every control character
(ESC above all), bidi control and lone surrogate becomes a visible escape,
so a prompt can never move the cursor, recolour the screen or reorder text.
Dollars are formatted here once, so every view shows the same figure.
"""

from __future__ import annotations

import math
import re

# C0 but tab and newline, DEL, C1, every bidi control (marks, embeddings,
# overrides, isolates), and lone surrogates (which would crash print()).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


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


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def usd(amount: float | None) -> str:
    """Dollars with enough digits to be meaningful for tiny figures; no figure (None, NaN,
    infinite) is "unknown", never "$nan"."""
    if amount is None or not math.isfinite(amount):
        return "unknown"
    return f"${amount:.4f}" if amount == 0 or amount >= 0.01 else f"${amount:.6f}"

"""Secret patterns and same-length masks (the rules behind `redact=True`).

Each secret is replaced by a mask of exactly its length, `[REDACTED]`
padded with `*` (or only `*` when the secret is shorter than the label).
Span offsets, target ranges and redaction offsets all index the stored
prompt and answers, so a same-length mask keeps every one of them valid
and `span.text == prompt[start:end]` still holds; a shorter label would
shift every offset after it. Line breaks inside a secret (a PEM block)
are kept, so the stored text keeps its layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from .errors import UsageError

LABEL = "[REDACTED]"


# Where a pattern has a group named `secret`, only that group is masked:
# "password: hunter2" keeps "password: " so the stored prompt still reads.
BUILTIN_PATTERNS: dict[str, str] = {
    # The body has no run of five dashes, so an unclosed BEGIN stops at the next one (no quadratic scan).
    "private_key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[^-]*(?:-{1,4}[^-]+)*-----END [A-Z0-9 ]*PRIVATE KEY-----",
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}",
    "bearer_token": r"\b[Bb]earer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    "aws_access_key_id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
    "slack_token": r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
    "credential": (
        r"(?i)\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|secret[_-]?key|client[_-]?secret"
        r"|password|passwd|pwd)\b[\"']?\s*[:=]\s*[\"']?(?P<secret>[^\s\"',;]{3,})"
    ),
    # Bounded parts, tried only where a run of address characters starts: linear on any text.
    "email": r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b",
}


class Found(NamedTuple):
    kind: str
    start: int
    end: int


def compile_patterns(extra: list[str] | dict[str, str] | None = None) -> dict[str, re.Pattern]:
    """The built-in patterns plus the user's (a list, or a dict name → regex).

    Called when the options are validated, so a bad regex is a UsageError
    naming it before any model call.
    """
    compiled = {}
    for name, pattern in {**BUILTIN_PATTERNS, **user_patterns(extra)}.items():
        try:
            compiled[name] = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise UsageError(f"redact pattern {name!r} ({pattern!r}) is not a valid regular expression: {exc}") from None
    return compiled


def user_patterns(extra: list[str] | dict[str, str] | None) -> dict[str, str]:
    """The user's patterns by name: a list's are named custom1, custom2, ..."""
    return dict(extra) if isinstance(extra, dict) else {f"custom{i + 1}": p for i, p in enumerate(extra or [])}


def find_secrets(text: str, patterns: dict[str, re.Pattern], known: dict[str, str] | None = None) -> list[Found]:
    """Non-overlapping secrets in `text`, by position: pattern matches and known secrets' repeats.

    `known` (secret → kind) catches an answer that echoes a secret of the
    prompt in a shape no pattern recognises on its own (cut short by the
    quoting, say). Overlapping matches merge into one, of the first kind.
    """
    hits = [_secret_span(kind, m) for kind, p in patterns.items() for m in p.finditer(text)]
    hits += [Found(kind, m.start(), m.end()) for secret, kind in (known or {}).items()
             for m in re.finditer(re.escape(secret), text)]
    merged: list[Found] = []
    for hit in sorted((h for h in hits if h.end > h.start), key=lambda h: (h.start, -h.end)):
        if merged and hit.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Found(last.kind, last.start, max(last.end, hit.end))
        else:
            merged.append(hit)
    return merged


def _secret_span(kind: str, match: re.Match) -> Found:
    group = "secret" if "secret" in match.re.groupindex and match.group("secret") else 0
    return Found(kind, match.start(group), match.end(group))


def mask(text: str, found: Iterable[Found]) -> str:
    """`text` with each secret replaced by a same-length mask (see the module docstring)."""
    parts, at = [], 0
    for f in found:
        parts += [text[at : f.start], _mask_of(text[f.start : f.end])]
        at = f.end
    return "".join([*parts, text[at:]])


def _mask_of(secret: str) -> str:
    n = len(secret)
    label = (LABEL + "*" * n)[:n] if n >= len(LABEL) else "*" * n
    return "".join("\n" if c == "\n" else m for c, m in zip(secret, label, strict=True))

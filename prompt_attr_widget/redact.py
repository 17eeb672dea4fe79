"""Masking secrets in what a run stores (`redact=True`, `--redact`).

The model still receives the real prompt: that is what is being
attributed. Only what is written (run.json, events.jsonl) and shown (the
widget, the returned result) is masked: the prompt, the system message,
the span texts, the baseline, every answer, and error messages.

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

from .engine import prompt_sha256
from .errors import UsageError
from .events import BaselineDone, Evaluated, RunAborted, RunFailed, RunStarted
from .schema import Call, Redaction

LABEL = "[REDACTED]"
NOT_REPRODUCIBLE = "secrets were masked in the stored prompt (redact=True), so it is not the prompt the model saw"

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


class Redactor:
    """Masks the events of one run before they are stored or shown.

    It remembers the secrets found in the prompt and system message (in
    memory only) to mask their echoes in answers. `prompt_sha256` is
    recomputed on the masked text: a hash of a low-entropy secret such as
    an e-mail address could be reversed by guessing.
    """

    def __init__(self, config):
        self.config = config
        self.patterns = compile_patterns(config.redact_patterns)
        self.known: dict[str, str] = {}

    def __call__(self, event):
        if isinstance(event, RunStarted):
            return event.model_copy(update={"record": self._record(event.record)})
        if isinstance(event, BaselineDone):
            baseline = self._call(event.baseline)
            target = event.target
            if target is not None and baseline.output is not None:
                target = target.model_copy(update={"text": baseline.output[target.start : target.end]})
            return event.model_copy(update={"baseline": baseline, "target": target})
        if isinstance(event, Evaluated):
            return event.model_copy(update={"evaluation": self._call(event.evaluation)})
        if isinstance(event, RunAborted):
            return event.model_copy(update={"reason": self.text(event.reason)})
        if isinstance(event, RunFailed):
            return event.model_copy(update={"error": self.text(event.error)})
        return event  # scores, spend, timings: no text

    def text(self, text: str | None) -> str | None:
        """Any stored text (an error message, an option) with its secrets masked."""
        return None if text is None else mask(text, find_secrets(text, self.patterns, self.known))

    def _learn(self, text: str | None, found: list[Found]) -> None:
        for f in found:
            self.known[text[f.start : f.end]] = f.kind

    def _call(self, call: Call) -> Call:
        if call.output is None:
            return call
        found = find_secrets(call.output, self.patterns, self.known)
        return call.model_copy(update={
            "output": mask(call.output, found),
            "redactions": [Redaction(kind=f.kind, start=f.start, end=f.end) for f in found],
        })

    def _record(self, record):
        found = {name: find_secrets(getattr(record, name) or "", self.patterns) for name in ("prompt", "system")}
        for name in found:
            self._learn(getattr(record, name), found[name])
        prompt, system = mask(record.prompt, found["prompt"]), self.text(record.system)
        spans = [s.model_copy(update={"text": prompt[s.start : s.end]}) for s in record.spans]
        config = {**record.config, "system": system, "target": self._option(record.config.get("target")),
                  "label": self.text(record.config.get("label")),
                  # a user's pattern may be a secret written out: keep only its name
                  "redact_patterns": list(user_patterns(self.config.redact_patterns)) or None}
        return record.model_copy(update={
            "prompt": prompt, "system": system, "spans": spans, "config": config,
            "prompt_sha256": prompt_sha256(prompt, self.config.model_copy(update={"system": system}), spans),
            "redacted": True,
            "redactions": [Redaction(kind=f.kind, start=f.start, end=f.end, field=name)
                           for name, hits in found.items() for f in hits],
            "reproducible": False, "not_reproducible_because": NOT_REPRODUCIBLE,
        })

    def _option(self, value):
        return self.text(value) if isinstance(value, str) else value


def redactor_for(config):
    """The event redactor a config asks for, or None (store events as they are)."""
    return Redactor(config) if config.redact else None

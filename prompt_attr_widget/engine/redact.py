"""Masking secrets in what a run stores (`redact=True`, `--redact`).

The model still receives the real prompt: that is what is being
attributed. Only what is written (run.json, events.jsonl) and shown (the
widget, the returned result) is masked: the prompt, the system message,
the span texts, the baseline, every answer, and error messages.

The patterns and the same-length masks are core/secrets.py.
"""

from __future__ import annotations

from ..core.events import BaselineDone, Evaluated, RunAborted, RunFailed, RunStarted
from ..core.identity import prompt_sha256
from ..core.schema import Call, Redaction
from ..core.secrets import Found, compile_patterns, find_secrets, mask, user_patterns

NOT_REPRODUCIBLE = "secrets were masked in the stored prompt (redact=True), so it is not the prompt the model saw"


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
        stored = record.settings
        masked = stored.model_copy(update={
            "system": system, "target": self._option(stored.target), "label": self.text(stored.label),
            # a user's pattern may be a secret written out: keep only its name
            "redact_patterns": list(user_patterns(self.config.redact_patterns)) or None,
        })
        config = {**record.config, **masked.model_dump(mode="json", include={"system", "target", "label", "redact_patterns"})}
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

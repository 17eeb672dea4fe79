"""The one reducer: events folded into a run record.

The engine's sinks (the run store, the widget) and the replay of a stored
events.jsonl all build their record with this function, so a live run and
a replayed one can never disagree.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .events import (
    BaselineDone,
    CallReserved,
    CallSettled,
    Estimate,
    Evaluated,
    FaithfulnessMeasured,
    NoiseMeasured,
    RunAborted,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
)
from .schema import RunRecord


def apply_event(record: RunRecord | None, event) -> RunRecord | None:
    """Fold one event into the run record (used live and to rebuild from events.jsonl)."""
    if isinstance(event, RunStarted):
        return event.record.model_copy(deep=True)
    if record is None:
        return None
    if isinstance(event, RunResumed):
        record.status, record.reason, record.stopped_by, record.finished_at = "running", None, None, None
        record.resumed_at.append(event.at)
    elif isinstance(event, BaselineDone):
        record.baseline, record.target, record.answer_tokens = event.baseline, event.target, event.tokens
    elif isinstance(event, NoiseMeasured):
        record.noise = event.noise
    elif isinstance(event, Evaluated):
        record.evaluations.append(event.evaluation)
    elif isinstance(event, (CallReserved, CallSettled)):
        count_spend(record.spend, event)
    elif isinstance(event, Estimate):
        record.attribution, record.surrogate = event.attribution, event.surrogate
    elif isinstance(event, FaithfulnessMeasured):
        record.faithfulness = event.faithfulness
    elif isinstance(event, (RunFinished, RunAborted, RunFailed)):
        record.status = {RunFinished: "finished", RunAborted: "aborted", RunFailed: "failed"}[type(event)]
        record.reason = getattr(event, "reason", None) or getattr(event, "error", None)
        record.stopped_by = getattr(event, "stopped_by", None)
        record.spend = event.spend
        record.timings_ms = event.timings_ms
        record.finished_at = _now()
    return record


def count_spend(spend, event) -> None:
    """Fold a CallReserved or CallSettled into a Spend: the record's, kept current call by call so
    a run killed mid-way still counts what it paid and, at their worst case, the calls it was
    killed during; and the evaluator's own, so the two count calls and tokens alike."""
    if isinstance(event, CallReserved):
        spend.calls += 1
        spend.reserved_usd += event.usd or 0.0
        return
    spend.reserved_usd = max(0.0, round(spend.reserved_usd - (event.reserved_usd or 0.0), 12))  # no float residue
    spend.usd = None if spend.usd is None or event.usd is None else spend.usd + event.usd
    if event.kind == "embed":
        spend.embed_tokens += event.prompt_tokens
    else:
        spend.prompt_tokens += event.prompt_tokens
        spend.completion_tokens += event.completion_tokens


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

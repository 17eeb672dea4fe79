"""The one reducer: events folded into a run record.

The engine's sinks (the run store, the widget) and the replay of a stored
events.jsonl all build their record with this function, so a live run and
a replayed one can never disagree.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .events import (
    BaselineDone,
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
        record.baseline, record.target = event.baseline, event.target
    elif isinstance(event, NoiseMeasured):
        record.noise = event.noise
    elif isinstance(event, Evaluated):
        record.evaluations.append(event.evaluation)
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

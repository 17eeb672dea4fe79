"""The one reducer: a record folded from events equals the record those events describe."""

from __future__ import annotations

from support import make_record

from prompt_attr_widget.core.events import (
    EVENT_ADAPTER,
    BaselineDone,
    Estimate,
    Evaluated,
    NoiseMeasured,
    RunAborted,
    RunFinished,
    RunResumed,
    RunStarted,
)
from prompt_attr_widget.core.reducer import apply_event


def _events_of(record):
    header = record.model_copy(update={"status": "running", "baseline": None, "noise": None, "evaluations": [],
                                       "attribution": [], "finished_at": None, "timings_ms": {}})
    return [
        RunStarted(record=header, planned=len(record.spans)),
        BaselineDone(baseline=record.baseline),
        NoiseMeasured(noise=record.noise),
        *(Evaluated(evaluation=e) for e in record.evaluations),
        Estimate(round=0, attribution=record.attribution),
        RunFinished(spend=record.spend, timings_ms=record.timings_ms),
    ]


def _fold(events):
    record = None
    for event in events:
        record = apply_event(record, event)
    return record


def test_folding_a_runs_events_rebuilds_its_record():
    expected = make_record(scores=[0.4, None, 0.02])
    folded = _fold(_events_of(expected))
    assert folded.model_dump(exclude={"finished_at"}) == expected.model_dump(exclude={"finished_at"})
    assert folded.finished_at is not None


def test_replayed_json_folds_to_the_same_record_as_live_events():
    """What the store writes (one JSON line an event) replays to what the live sinks folded."""
    events = _events_of(make_record(prompt="A <b>bold</b> start.\x1b[31m Red. \u202eevil"))
    replayed = [EVENT_ADAPTER.validate_json(e.model_dump_json()) for e in events]
    assert _fold(replayed).model_dump(exclude={"finished_at"}) == _fold(events).model_dump(exclude={"finished_at"})


def test_events_before_the_start_are_ignored_and_the_header_is_copied():
    record = make_record()
    assert apply_event(None, Evaluated(evaluation=record.evaluations[0])) is None
    started = RunStarted(record=record, planned=3)
    folded = apply_event(None, started)
    folded.evaluations.clear()
    assert started.record.evaluations, "the event's record must not be changed by folding"


def test_an_aborted_run_resumes_as_running_and_keeps_its_results():
    events = _events_of(make_record())[:-1] + [RunAborted(reason="interrupted", spend=make_record().spend)]
    record = _fold(events)
    assert (record.status, record.reason) == ("aborted", "interrupted")
    record = apply_event(record, RunResumed(at="2026-12-03T11:00:00.000+00:00", planned=3))
    assert (record.status, record.reason, record.finished_at) == ("running", None, None)
    assert record.resumed_at == ["2026-12-03T11:00:00.000+00:00"]
    assert len(record.evaluations) == 3

"""The events the engine streams; the run store, widget and CLI each consume them.

Events are small on purpose: an `Evaluated` carries one evaluation, never
the history, so every sink can update incrementally.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from .schema import (
    AnswerTokens,
    Call,
    CallKind,
    Evaluation,
    Faithfulness,
    Money,
    NoiseFloor,
    RunRecord,
    SpanScore,
    Spend,
    StoppedBy,
    SurrogateFit,
    Target,
    lenient,
)


class RunStarted(BaseModel):
    type: Literal["run_started"] = "run_started"
    record: RunRecord  # the header: prompt, spans, config, backend; no results yet
    planned: int  # evaluations planned (an upper bound for hierarchical runs)


class RunResumed(BaseModel):
    """A stopped run continues in the same folder: its stored results are kept, not re-paid."""

    type: Literal["run_resumed"] = "run_resumed"
    at: str  # UTC time the resume began
    planned: int  # evaluations planned in all, the stored ones included


class BaselineDone(BaseModel):
    type: Literal["baseline"] = "baseline"
    baseline: Call
    target: Target | None = None  # resolved against the baseline answer
    tokens: AnswerTokens | None = None  # log-probability runs: the answer's tokens, scored under the whole prompt

    @field_validator("tokens", mode="wrap")
    @classmethod
    def _lost_if_damaged(cls, value, handler):
        return lenient(value, handler)


class NoiseMeasured(BaseModel):
    type: Literal["noise"] = "noise"
    noise: NoiseFloor


class FaithfulnessMeasured(BaseModel):
    type: Literal["faithfulness"] = "faithfulness"
    faithfulness: Faithfulness


class Evaluated(BaseModel):
    type: Literal["evaluated"] = "evaluated"
    evaluation: Evaluation


class CallReserved(BaseModel):
    """A billed request is about to be sent; the most it may cost is on disk before it can be billed.

    A run killed while the request is in flight (SIGKILL, a power cut) then
    still counts it, at this worst case, when it is rebuilt and resumed.
    """

    type: Literal["call_reserved"] = "call_reserved"
    kind: CallKind
    usd: Money | None  # the reservation the budget booked; None when the model has no price


class CallSettled(BaseModel):
    """A billed request came back (or failed): its cost replaces its reservation, before its answer is used."""

    type: Literal["call_settled"] = "call_settled"
    kind: CallKind
    reserved_usd: Money | None  # what CallReserved booked for it
    usd: Money | None  # what it cost; its worst case when that cannot be known (a failure mid-request)
    prompt_tokens: int = 0  # embedding input tokens for kind "embed"
    completion_tokens: int = 0


class Estimate(BaseModel):
    type: Literal["estimate"] = "estimate"
    round: int
    attribution: list[SpanScore]
    surrogate: SurrogateFit | None = None


class Progress(BaseModel):
    type: Literal["progress"] = "progress"
    done: int
    planned: int
    calls: int
    cache_hits: int
    spend_usd: float | None
    elapsed_s: float
    eta_s: float | None


class RunFinished(BaseModel):
    type: Literal["run_finished"] = "run_finished"
    spend: Spend
    timings_ms: dict[str, float]


class RunAborted(BaseModel):
    type: Literal["run_aborted"] = "run_aborted"
    reason: str
    stopped_by: StoppedBy | None = None  # "budget": the next call could have passed it
    spend: Spend
    timings_ms: dict[str, float] = Field(default_factory=dict)


class RunFailed(BaseModel):
    type: Literal["run_failed"] = "run_failed"
    error: str
    spend: Spend
    timings_ms: dict[str, float] = Field(default_factory=dict)


Event = Annotated[
    RunStarted
    | RunResumed
    | BaselineDone
    | NoiseMeasured
    | Evaluated
    | CallReserved
    | CallSettled
    | Estimate
    | FaithfulnessMeasured
    | Progress
    | RunFinished
    | RunAborted
    | RunFailed,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
TERMINAL = (RunFinished, RunAborted, RunFailed)

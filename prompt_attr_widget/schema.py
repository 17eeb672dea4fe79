"""The run record: a versioned pydantic schema for `runs/<run_id>/run.json`.

Everything needed to replay a run without a model call, or to re-run it and
compare, and nothing secret: the config holds no API key and URLs are
stored without credentials.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .segment import Span

SCHEMA_VERSION = 1
Status = Literal["running", "finished", "aborted", "failed"]


class Call(BaseModel):
    """One model answer (baseline or ablated) with what it cost."""

    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embed_tokens: int = 0
    cost_usd: float | None = 0.0
    elapsed_ms: float = 0.0
    cache_hit: bool = False
    finish_reason: str | None = None
    system_fingerprint: str | None = None


class Evaluation(Call):
    """The answer with some spans deleted, and its score against the baseline."""

    id: int
    round: int
    dropped: list[int]
    score: float
    cosine: float | None = None


class SpanScore(BaseModel):
    """The attribution of one span."""

    index: int
    score: float
    resolved: bool = True  # False: inherited from an unrefined group (equal share)
    group: tuple[int, int]
    evaluation: int | None = None


class Spend(BaseModel):
    usd: float | None = 0.0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embed_tokens: int = 0


class BackendRecord(BaseModel):
    backend: str
    model: str
    embed_model: str
    base_url: str | None = None
    fingerprint: dict = Field(default_factory=dict)


class RunRecord(BaseModel):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: Status = "running"
    reason: str | None = None
    created_at: str
    finished_at: str | None = None
    library_version: str
    prompt: str
    system: str | None = None
    prompt_sha256: str
    config: dict
    backend: BackendRecord
    spans: list[Span]
    projected_usd: float | None = None
    baseline: Call | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    attribution: list[SpanScore] = Field(default_factory=list)
    spend: Spend = Field(default_factory=Spend)
    timings_ms: dict[str, float] = Field(default_factory=dict)

"""The run record: a versioned pydantic schema for `runs/<run_id>/run.json`.

Everything needed to replay a run without a model call, or to re-run it and
compare, and nothing secret: the config holds no API key and URLs are
stored without credentials.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .segment import Span

SCHEMA_VERSION = 2  # 2 added scorer, target, noise floor, surrogate and faithfulness; 1 still loads
Status = Literal["running", "finished", "aborted", "failed"]
# What an evaluation was for: only "attribution" evaluations feed the estimate.
Purpose = Literal["attribution", "noise", "faithfulness", "heldout"]


class Call(BaseModel):
    """One model answer (baseline or ablated) with what it cost.

    `output` is None when nothing was generated: the log-probability scorer
    only re-scores the baseline answer under the ablated prompt.
    """

    output: str | None
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
    target_logprob: float | None = None  # mean log-prob per target token (logprob scorer)
    purpose: Purpose = "attribution"


class Target(BaseModel):
    """The part of the baseline answer being explained: [start, end) of its characters."""

    text: str
    start: int
    end: int


class SpanScore(BaseModel):
    """The attribution of one span."""

    index: int
    score: float
    resolved: bool = True  # False: inherited from an unrefined group (equal share)
    group: tuple[int, int]
    evaluation: int | None = None
    stderr: float | None = None  # the surrogate's bootstrap standard error
    significant: bool | None = None  # above the noise floor (None: not assessed)


class NoiseFloor(BaseModel):
    """How far the score moves when nothing is deleted: below this, a score is noise."""

    repeats: int  # baseline calls in all (1: a deterministic backend, nothing to repeat)
    samples: list[float] = Field(default_factory=list)  # scores between every two baseline answers
    min_effect: float  # smallest effect worth reporting, in the scorer's unit
    floor: float  # max(samples, min_effect)


class SurrogateFit(BaseModel):
    """The sparse linear model fitted to random keep-masks."""

    masks: int  # evaluated masks (distinct)
    keep_prob: float
    alpha: float  # LASSO penalty used
    intercept: float
    r2: float | None  # in-sample fit; low means the spans do not act additively
    bootstrap: int


class Faithfulness(BaseModel):
    """Does deleting the top spans matter more than deleting random ones?"""

    k: int
    top_k: list[int]
    top_k_score: float | None = None
    random_scores: list[float] = Field(default_factory=list)
    lds: float | None = None  # Spearman of predicted vs actual scores on held-out masks
    heldout: int = 0


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
    scorer: str = "embedding"
    score_unit: str = "embedding distance (0-1)"
    target: Target | None = None
    noise: NoiseFloor | None = None
    surrogate: SurrogateFit | None = None
    faithfulness: Faithfulness | None = None
    baseline: Call | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    attribution: list[SpanScore] = Field(default_factory=list)
    spend: Spend = Field(default_factory=Spend)
    timings_ms: dict[str, float] = Field(default_factory=dict)

"""The run record: a versioned pydantic schema for `runs/<run_id>/run.json`.

Everything needed to replay a run without a model call, or to re-run it and
compare, and nothing secret: the config holds no API key and URLs are
stored without credentials.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
)

from .config import AttributionConfig
from .options import REPLAYED

# 3 added per-token log-probabilities (TokenValues, AnswerTokens); 2 added scorer, target, noise
# floor, surrogate and faithfulness. 1 and 2 still load.
SCHEMA_VERSION = 3
Status = Literal["running", "finished", "aborted", "failed"]
# What stopped an aborted run, when a rule did (not an interrupt): the budget.
StoppedBy = Literal["budget"]
# What an evaluation was for: only "attribution" evaluations feed the estimate.
Purpose = Literal["attribution", "noise", "placebo", "behaviour", "faithfulness", "heldout"]
Behaviour = Literal["changes", "probability"]
CallKind = Literal["chat", "logprob", "embed"]  # the kinds of billed request (core/cost.py)
# Dollars: a finite amount, never negative. A NaN or infinite figure in a run file is refused
# (the run is then rebuilt from its events, or reported corrupt), never shown as "$nan".
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Span(BaseModel):
    """One unit of the prompt that can be removed: `text == prompt[start:end]`."""

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    end: int
    text: str
    kind: str = "text"  # heading, text, fence, list


class Redaction(BaseModel):
    """One secret masked in the stored run: its kind and [start, end) in `field`, never its text."""

    kind: str
    start: int
    end: int
    field: str = "output"  # prompt | system (in the record) or output (in a call)


class Call(BaseModel):
    """One model answer (baseline or ablated) with what it cost.

    `output` is None when nothing was generated: the log-probability scorer
    only re-scores the baseline answer under the ablated prompt.
    """

    output: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embed_tokens: int = 0
    cost_usd: Money | None = 0.0
    elapsed_ms: float = 0.0
    cache_hit: bool = False
    finish_reason: str | None = None
    system_fingerprint: str | None = None
    redactions: list[Redaction] = Field(default_factory=list)  # secrets masked in `output`

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler):
        """Leave out an empty `redactions` and an evaluation's absent `tokens`: runs without
        --redact, and embedding runs, store what they always did."""
        data = handler(self)
        if not data.get("redactions"):
            data.pop("redactions", None)
        if data.get("tokens", 0) is None:
            data.pop("tokens")
        return data


class TokenValues(BaseModel):
    """The log-probability of every token of the baseline answer under one prompt, as float32.

    Kept so that any part of the answer can be scored again later without a model call
    (views/result.py: for_target). The numbers themselves live in the run folder's
    `logprobs.f32` (store/tokens.py), 4 bytes each: JSON text cannot hold a float32 in fewer
    than 5 characters. run.json and events.jsonl hold where they are (`at`, in floats from the
    start of that file) and their CRC-32, so a truncated or edited file is detected, never
    misread. In memory `values` holds them (float32, little-endian); it is never serialised.
    """

    count: int = Field(ge=0)
    at: int | None = Field(default=None, ge=0)  # set when stored
    crc32: int | None = None
    offsets: list[int] | None = None  # where each token starts in the answer, when not as AnswerTokens.offsets
    values: bytes | None = Field(default=None, exclude=True, repr=False)

    @model_serializer(mode="wrap")
    def _omit_usual_offsets(self, handler):
        data = handler(self)
        if data.get("offsets", 0) is None:
            data.pop("offsets")
        return data


def covering(offsets: list[int], length: int, start: int, end: int) -> list[bool]:
    """Which tokens (starting at `offsets`, the last ending at `length`) overlap characters
    [start, end): the tokens whose log-probabilities score that part of the answer, for a
    backend's answer (TokenLogprobs) and a stored one (AnswerTokens) alike."""
    ends = [*offsets[1:], length]
    return [a < end and b > start for a, b in zip(offsets, ends, strict=True)]


class AnswerTokens(BaseModel):
    """How the baseline answer is cut into tokens, and their log-probabilities under the whole prompt."""

    offsets: list[int]  # where each token starts in the answer (characters)
    length: int  # characters in the answer
    baseline: TokenValues


class Evaluation(Call):
    """The answer with some spans deleted, and its score against the baseline."""

    id: int
    round: int
    dropped: list[int]
    score: float
    cosine: float | None = None
    target_logprob: float | None = None  # mean log-prob per target token (logprob scorer)
    purpose: Purpose = "attribution"
    repeat: int = 0  # which repeated baseline a noise evaluation is (1, 2, ...), or which placebo (0, 1, ...)
    tokens: TokenValues | None = None  # log-probability runs (schema 3): every answer token's

    @field_validator("tokens", mode="wrap")
    @classmethod
    def _lost_if_damaged(cls, value, handler):
        return lenient(value, handler)


class Target(BaseModel):
    """The part of the baseline answer being explained: [start, end) of its characters."""

    text: str
    start: int
    end: int


def lenient(value, handler):
    """A damaged reference to per-token numbers (run files are anyone's to edit) reads as none:
    only those numbers are lost, and the views say so, never the evaluation or run holding it."""
    try:
        return handler(value)
    except ValidationError:
        return None


class Retargeted(BaseModel):
    """A record that explains another part of its run's answer, scored from the stored evaluations."""

    whole: Target | None  # what the run itself scored: None for the whole answer
    scorer: str  # the run's own scorer (an embedding run's parts are scored by target overlap)
    refined_by_whole: bool = False  # hierarchical: its passes refined what the run's own score found hot
    checked: bool = False  # the run made a faithfulness check (its own record's `faithfulness`)
    unchecked: bool = False  # its top-k deletion could not be scored for this part (see notes)


class SpanScore(BaseModel):
    """The attribution of one span."""

    index: int
    score: float
    resolved: bool = True  # False: inherited from an unrefined group (equal share)
    group: tuple[int, int]
    evaluation: int | None = None
    stderr: float | None = None  # the surrogate's bootstrap standard error
    significant: bool | None = None  # above the noise floor, and not refuted by the behavioural check
    # the behavioural check (stages/behaviour.py): "changes" the answer when deleted, or moves its
    # "probability" only (then not significant); None: not checked
    behaviour: Behaviour | None = None
    behaviour_note: str | None = None  # what changed ("the target is gone"), or why not checked


class NoiseFloor(BaseModel):
    """How far the score moves when nothing is deleted: below this, a score is noise."""

    repeats: int  # baseline calls in all (1: a deterministic backend, nothing to repeat)
    samples: list[float] = Field(default_factory=list)  # scores between every two baseline answers
    min_effect: float  # smallest effect worth reporting, in the scorer's unit
    floor: float  # max(samples, min_effect, calibrated)
    placebo: list[float] = Field(default_factory=list)  # scores of the placebo deletions (stages/noise.py)
    calibrated: float | None = None  # the placebo bound (None: no placebos)
    fpr: float | None = None  # the share of irrelevant deletions the calibrated bound lets through


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
    """What a run paid, over every session of it.

    `usd` is what was billed, a call whose bill could not be known (cut off
    mid-request) counted at its worst case. `reserved_usd` is the worst case
    of calls the run was killed during: events.jsonl holds their
    reservations but not their outcome. Both count against a budget.
    """

    usd: Money | None = 0.0
    reserved_usd: Money = 0.0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embed_tokens: int = 0

    @property
    def counted_usd(self) -> float | None:
        """What the run counts as spent (the budget's view): billed plus reserved; None if unpriced."""
        return None if self.usd is None else self.usd + self.reserved_usd


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
    stopped_by: StoppedBy | None = None  # aborted by the budget; None in runs written before this field
    created_at: str
    finished_at: str | None = None
    library_version: str
    prompt: str
    system: str | None = None
    prompt_sha256: str
    config: dict  # AttributionConfig as stored (no credentials); read it through `settings`
    backend: BackendRecord
    spans: list[Span]
    projected_usd: Money | None = None  # an estimate of typical token counts (core/cost.py), not a bound
    scorer: str = "embedding"
    score_unit: str = "embedding distance (0-1)"
    target: Target | None = None
    noise: NoiseFloor | None = None
    surrogate: SurrogateFit | None = None
    faithfulness: Faithfulness | None = None
    baseline: Call | None = None
    answer_tokens: AnswerTokens | None = None  # log-probability runs (schema 3)

    @field_validator("answer_tokens", mode="wrap")
    @classmethod
    def _lost_if_damaged(cls, value, handler):
        return lenient(value, handler)
    evaluations: list[Evaluation] = Field(default_factory=list)
    attribution: list[SpanScore] = Field(default_factory=list)
    spend: Spend = Field(default_factory=Spend)  # across every session of the run
    timings_ms: dict[str, float] = Field(default_factory=dict)
    redacted: bool = False  # secrets were masked in everything stored (prompt, spans, answers)
    redactions: list[Redaction] = Field(default_factory=list)  # those of the prompt and system
    reproducible: bool = True
    not_reproducible_because: str | None = None
    resumed_at: list[str] = Field(default_factory=list)  # when each resume began
    rerun_of: str | None = None  # the run this one repeated from its stored snapshot
    retargeted: Retargeted | None = None  # not a stored run: another part of its answer (for_target)

    @property
    def settings(self) -> AttributionConfig:
        """The stored config as typed options: what the run was asked for.

        An option a run written before it existed lacks reads as the table's
        default (core/options.py); unknown keys are ignored; a stored value
        that does not validate reads as the default too (`inconsistency`
        reports those the views depend on).
        """
        return AttributionConfig.from_stored(self.config)

    def ranked(self) -> list[SpanScore]:
        """The span scores, most influential first (see `rank`)."""
        return rank(self.attribution)


def rank(scores):
    """Scored spans (anything with .score and .index), most influential first; ties: the
    earlier span first. The one ranking every view, summary and check uses."""
    return sorted(scores, key=lambda s: (-s.score, s.index))


def inconsistency(record: RunRecord) -> str | None:
    """Why a loaded record cannot be shown, or None.

    run.json and events.jsonl are files anyone can edit, and each part of a
    record validates on its own; this checks what ties them together (every
    span fits the prompt, every score names a span), so no renderer ever
    indexes outside the run.
    """
    n, size = len(record.spans), len(record.prompt)
    for i, s in enumerate(record.spans):
        if s.index != i or not 0 <= s.start <= s.end <= size:
            return f"span {i} does not fit the prompt"
    for s in record.attribution:
        if not 0 <= s.index < n:
            return f"a score names span {s.index}, but the run has {n}"
    # The stored options that replaying a run reads (notes, estimates): checked as the config checks them.
    problems: dict[str, str] = {}
    AttributionConfig.from_stored(record.config, problems)
    for name in REPLAYED:
        if name in problems:
            return f"config {problems[name]}"
    return None

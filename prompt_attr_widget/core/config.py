"""Run configuration: one validated pydantic model shared by the API, CLI and magics.

Keeping every option in one place means the run file records exactly what
was asked for, and that the three front ends cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import UsageError

SegmentLevel = Literal["auto", "heading", "paragraph", "sentence", "line", "tokens"]
Method = Literal["hierarchical", "loo", "surrogate"]
Scorer = Literal["auto", "logprob", "embedding"]
Faithfulness = Literal["off", "cheap", "full"]

DEFAULT_RUNS_DIR = "runs"


class Price(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(ge=0)
    output: float = Field(default=0.0, ge=0)


class AttributionConfig(BaseModel):
    """Everything that decides what a run computes (and nothing secret).

    The API key is deliberately absent: backends read it from the
    environment or take it as a separate argument, so it can never be
    serialised into a run file or a cache key.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = "local"
    base_url: str | None = None
    embed_model: str | None = None
    system: str | None = None
    segment: SegmentLevel = "auto"
    window_tokens: int = Field(default=40, ge=1, le=10_000)
    spans: list[tuple[int, int]] | None = None
    method: Method = "hierarchical"
    scorer: Scorer = "auto"
    target: str | tuple[int, int] | None = None
    masks: int = Field(default=32, ge=4, le=4096)
    keep_prob: float = Field(default=0.5, gt=0, lt=1)
    noise_repeats: int | None = Field(default=None, ge=1, le=20)
    min_effect: float | None = Field(default=None, ge=0)
    faithfulness: Faithfulness = "cheap"
    heldout_masks: int = Field(default=16, ge=4, le=1024)
    logprob_template: Literal["chatml", "plain"] = "chatml"
    group_fraction: float = Field(default=0.2, gt=0, le=1)
    refine_threshold: float = Field(default=0.85, gt=0, le=1)
    max_tokens: int = Field(default=128, ge=1, le=32_768)
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int = 42
    concurrency: int = Field(default=20, ge=1, le=1000)
    rpm: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=60.0, gt=0)
    # 4, not the SDK's 2: one failed call fails a run of hundreds, and with backoff
    # 0.5, 1, 2, 4 s (or the server's Retry-After) 4 retries ride out a ~8 s 5xx/429
    # storm, where 2 give up after ~1.5 s. Broken 200 answers get as many (backends/openai.py).
    max_retries: int = Field(default=4, ge=0, le=20)
    budget: float | None = Field(default=None, ge=0)
    price: Price | None = None
    embed_price: Price | None = None
    cache: bool = True
    label: str | None = None
    allow_insecure: bool = False  # plain http to a host that is not this machine
    redact: bool = False  # mask secrets in the stored run; the model still gets the real prompt
    redact_patterns: list[str] | dict[str, str] | None = None  # extra regexes (name → regex)

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must not be empty; use 'local' for the embedded model")
        return value.strip()

    @field_validator("target")
    @classmethod
    def _target_usable(cls, value):
        if isinstance(value, str) and not value.strip():
            raise ValueError("target must not be empty: give text the answer contains, or a range (start, end)")
        if isinstance(value, tuple) and not 0 <= value[0] < value[1]:
            raise ValueError(f"target range {value} must have 0 <= start < end")
        return value

    @field_validator("model", "base_url", "embed_model", "system", "target", "label")
    @classmethod
    def _valid_unicode(cls, value):
        """A lone surrogate cannot be sent or saved: refuse it before a run folder exists."""
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"holds a lone surrogate at character {exc.start}, which is not valid Unicode text") from None
        return value

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, value):
        from .secrets import compile_patterns

        compile_patterns(value)  # a bad regex fails here, before any call, naming the pattern
        return value

    @model_validator(mode="after")
    def _patterns_need_redact(self):
        if self.redact_patterns and not self.redact:
            raise ValueError("redact_patterns only apply with redact=True (--redact)")
        return self

    @classmethod
    def build(cls, **options) -> AttributionConfig:
        """Validate options, turning pydantic's report into one readable UsageError."""
        from pydantic import ValidationError

        try:
            return cls(**{k: v for k, v in options.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                for err in exc.errors()
            )
            raise UsageError(f"invalid option: {problems}") from None


def runs_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The runs folder: the argument, else $PROMPT_ATTR_RUNS_DIR, else ./runs."""
    return Path(explicit or os.environ.get("PROMPT_ATTR_RUNS_DIR") or DEFAULT_RUNS_DIR)


def cache_dir() -> Path:
    """The call cache folder: $PROMPT_ATTR_CACHE_DIR, else ~/.cache/prompt_attr."""
    env = os.environ.get("PROMPT_ATTR_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prompt_attr"

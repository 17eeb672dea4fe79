"""Run configuration: one validated pydantic model shared by the API, CLI and magics.

Keeping every option in one place means the run file records exactly what
was asked for, and that the three front ends cannot drift apart. The fields
of `AttributionConfig` come from the table in core/options.py; the rules
between and within them (the validators) are written here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .errors import UsageError
from .options import OPTIONS, Faithfulness, Method, Option, Price, Scorer, SegmentLevel

__all__ = ["AttributionConfig", "Faithfulness", "Method", "Price", "Scorer", "SegmentLevel", "cache_dir",
           "config_model", "runs_dir"]

DEFAULT_RUNS_DIR = "runs"


class _Rules(BaseModel):
    """The validators and constructors of `AttributionConfig`; its fields come from the table."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("model", check_fields=False)
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must not be empty; use 'local' for the embedded model")
        return value.strip()

    @field_validator("target", check_fields=False)
    @classmethod
    def _target_usable(cls, value):
        if isinstance(value, str) and not value.strip():
            raise ValueError("target must not be empty: give text the answer contains, or a range (start, end)")
        if isinstance(value, tuple) and not 0 <= value[0] < value[1]:
            raise ValueError(f"target range {value} must have 0 <= start < end")
        return value

    @field_validator("model", "base_url", "embed_model", "system", "target", "label", check_fields=False)
    @classmethod
    def _valid_unicode(cls, value):
        """A lone surrogate cannot be sent or saved: refuse it before a run folder exists."""
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"holds a lone surrogate at character {exc.start}, which is not valid Unicode text") from None
        return value

    @field_validator("redact_patterns", check_fields=False)
    @classmethod
    def _patterns_compile(cls, value):
        from .secrets import compile_patterns

        compile_patterns(value)  # a bad regex fails here, before any call, naming the pattern
        return value

    @model_validator(mode="after")
    def _patterns_need_redact(self):
        if getattr(self, "redact_patterns", None) and not getattr(self, "redact", False):
            raise ValueError("redact_patterns only apply with redact=True (--redact)")
        return self

    def estimator(self, n_spans: int) -> str:
        """The method a run of this many spans really uses: with at most 2 / group_fraction
        spans a coarse hierarchical pass cannot save calls, so it is leave-one-out."""
        if self.method == "hierarchical" and n_spans <= 2 / self.group_fraction:
            return "loo"
        return self.method

    @classmethod
    def build(cls, **options) -> AttributionConfig:
        """Validate options, turning pydantic's report into one readable UsageError."""
        try:
            return cls(**{k: v for k, v in options.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                for err in exc.errors()
            )
            raise UsageError(f"invalid option: {problems}") from None

    @classmethod
    def from_stored(cls, config: Mapping, problems: dict[str, str] | None = None) -> AttributionConfig:
        """A stored run's config as validated options; never raises.

        An option the run lacks (it was written before the option existed),
        or stored as None, gets the table's default (or its `before`: what such runs ran with); keys no option has
        (an option since removed) are ignored; a stored value that does not
        validate (an edited run.json) is read as the default too, and
        `problems`, if given, gets "name: why" for it.
        """
        kept = {k: v for k, v in config.items() if k in cls.model_fields and v is not None}
        kept.update({o.name: o.before for o in OPTIONS if o.before is not None and o.name not in config})
        while True:
            try:
                return cls.model_validate(kept)
            except ValidationError as exc:
                bad = _blame(cls, kept, exc.errors())
                for name, why in bad.items():
                    kept.pop(name)
                    if problems is not None:
                        problems.setdefault(name, why)


def _blame(cls, kept: dict, errors: Iterable[dict]) -> dict[str, str]:
    """The stored options behind validation errors; a rule between options blames whichever fails alone."""
    bad = {}
    for err in errors:
        if err["loc"] and err["loc"][0] in kept:
            bad.setdefault(err["loc"][0], f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
    if bad:
        return bad
    for name, value in kept.items():
        try:
            cls.model_validate({name: value})
        except ValidationError as exc:
            bad[name] = f"{name}: {exc.errors()[0]['msg']}"
    return bad or dict.fromkeys(kept, "options: do not validate together")


def config_model(options: Iterable[Option] = OPTIONS, name: str = "AttributionConfig") -> type[_Rules]:
    """The pydantic model of a table of options, with the validators above."""
    return create_model(
        name,
        __base__=_Rules,
        __module__=__name__,
        __doc__=_DOC,
        **{o.name: (o.type, o.field()) for o in options},
    )


_DOC = """Everything that decides what a run computes (and nothing secret).

    The API key is deliberately absent: backends read it from the
    environment or take it as a separate argument, so it can never be
    serialised into a run file or a cache key. The fields are the table
    `core.options.OPTIONS`.
    """

AttributionConfig = config_model()


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

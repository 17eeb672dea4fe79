"""The options of a run, in one table: type, default, bounds, choices, help, CLI flag and role.

Everything else is derived from `OPTIONS`: the `AttributionConfig` model
(core/config.py), the flags of `prompt-attr run`/`ab`/`resume`/`rerun` and
of `%%attribute` (cli.py), which options a resumed run may change (api.py),
which ones a comparison ignores (views/compare.py), and how a stored run's
config is read back (`RunRecord.settings`). Adding an option is one entry
here plus the code that acts on it.

Help sentences state neither the default nor the choices: both are added
from the entry (`Option.cli_help`). This module imports no other module of
the package and nothing heavy.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CliKind = Literal["value", "switch", "negate", "append", "none"]


class Price(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(ge=0)
    output: float = Field(default=0.0, ge=0)


@dataclass(frozen=True)
class Option:
    """One option of a run.

    `cli` says how it appears on the command line: "value" (``--name VALUE``),
    "switch" (``--name`` turns it on), "negate" (``--no-name`` turns it
    off; ``--name/--no-name`` on resume and rerun), "append" (a repeatable
    flag collecting a list) or "none" (Python API only). `flag` is the
    spelling where it is not ``--`` + the name with dashes. `unset` says
    what the default None means, for the help. `resumable`: a resumed or
    re-run run may change it (how a run runs, never what it computes);
    `operational`: it never changes what a run computes, so comparisons
    ignore it; `replayed`: the views read it from a stored run, so a stored
    value that does not validate makes the run corrupt instead of falling
    back to the default. `resume_help` replaces the help on resume/rerun
    (and puts the option there even if it is not resumable). `before`: what a stored run
    written before the option existed ran with, when that is not the default (a run keeps
    computing what it computed when it is resumed or replayed).
    """

    name: str
    type: Any
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    cli: CliKind = "value"
    flag: str | None = None
    metavar: str | None = None
    unset: str = "none"
    resumable: bool = False
    operational: bool = False
    replayed: bool = False
    resume_help: str | None = None
    before: Any = None

    @property
    def choices(self) -> tuple | None:
        """The allowed values, for an option whose type is a Literal (or an optional one)."""
        for t in (self.type, *typing.get_args(self.type)):
            if typing.get_origin(t) is Literal:
                return typing.get_args(t)
        return None

    @property
    def bounds(self) -> dict[str, float]:
        return {k: v for k in ("ge", "gt", "le", "lt") if (v := getattr(self, k)) is not None}

    @property
    def cli_flag(self) -> str | None:
        """The flag of `prompt-attr run` (None: not on the command line)."""
        if self.cli == "none":
            return None
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.cli == "negate" else f"--{dashed}"

    @property
    def cli_dest(self) -> str:
        """The argparse attribute `prompt-attr run` stores it in."""
        return f"no_{self.name}" if self.cli == "negate" else self.name

    @property
    def cli_type(self) -> type | None:
        """What argparse converts a value to: the option's first scalar type (choices need none)."""
        if self.choices is not None or self.cli in ("switch", "negate", "none"):
            return None
        scalars = [a for a in (self.type, *typing.get_args(self.type)) if a in (int, float, str)]
        if not scalars:  # a list or dict option takes strings, one per flag
            return str
        return scalars[0]

    @property
    def on_resume(self) -> bool:
        """Whether `prompt-attr resume`/`rerun` take it."""
        return self.cli != "none" and (self.resumable or self.resume_help is not None)

    def shown_default(self) -> str:
        """The default as the help states it."""
        value = self.default
        if value is None:
            return self.unset
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def cli_help(self) -> str:
        """Help of the `prompt-attr run` flag: the sentence and the default (argparse shows the choices)."""
        if self.cli == "negate":
            tail = f"default: {self.name.replace('_', ' ')} {self.shown_default()}"
        else:
            tail = f"default {self.shown_default()}"
        return _escape(f"{self.help} ({tail})")

    def resume_cli_help(self) -> str:
        """Help of the flag of `prompt-attr resume`/`rerun`: unset, the run keeps its own value."""
        if self.resume_help is not None:
            return _escape(self.resume_help)
        return _escape(f"{self.help} (default: the run's own setting)")

    def field(self):
        """The pydantic field: the default and the bounds."""
        return Field(default=self.default, **self.bounds)


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings


SegmentLevel = Literal["auto", "heading", "paragraph", "sentence", "line", "tokens"]
Method = Literal["hierarchical", "loo", "surrogate"]
Scorer = Literal["auto", "logprob", "embedding"]
Faithfulness = Literal["off", "cheap", "full"]
LogprobTemplate = Literal["chatml", "plain"]
_REDACT_HELP = (
    "mask secrets (API keys, tokens, passwords, e-mails) in the saved run; the model still gets the real "
    "prompt; the call cache is not written; the run is marked not reproducible"
)

# The order is that of the run file's config and of the help.
OPTIONS: tuple[Option, ...] = (
    Option("model", str, "local", "local | local:/path.gguf | gpt-4o-mini | openai:<model> | a name with --base-url"),
    Option("base_url", str | None, None, "an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1",
           resume_help="the server again, if its URL held credentials (they are never stored)"),
    Option("embed_model", str | None, None, "embedding model for the distance score", unset="the backend's own"),
    Option("system", str | None, None, "a system message sent with every call"),
    Option("segment", SegmentLevel, "auto", "span level; auto is sentence"),
    Option("window_tokens", int, 40, "tokens per span for --segment tokens", ge=1, le=10_000),
    Option("spans", list[tuple[int, int]] | None, None, "explicit [start, end) character spans, instead of segmenting",
           cli="none"),
    Option("method", Method, "hierarchical",
           "hierarchical passes, leave-one-out, or a sparse linear surrogate on random masks", replayed=True),
    Option("scorer", Scorer, "auto",
           "log-probability of the answer where the backend offers it (auto), else embedding distance"),
    Option("target", str | tuple[int, int] | None, None, "explain only this part of the answer, e.g. --target Lyon",
           unset="the whole answer"),
    Option("masks", int, 32, "random masks for --method surrogate", ge=4, le=4096, replayed=True),
    Option("keep_prob", float, 0.5, "chance each span is kept in a random mask", gt=0, lt=1, replayed=True),
    Option("noise_repeats", int | None, None, "baseline calls measuring the noise floor", ge=1, le=20,
           unset="3 remote, 1 local"),
    Option("min_effect", float | None, None, "smallest score worth reporting, in the scorer's unit", ge=0,
           unset="set by the scorer"),
    Option("null_samples", int, 8, "placebo deletions calibrating the noise floor (0: off)", ge=0, le=64,
           before=0),
    Option("behaviour_checks", int, 3,
           "generations checking whether deleting a significant span changes the answer (0: off)", ge=0, le=20,
           before=0),
    Option("faithfulness", Faithfulness, "cheap",
           "checks of the attribution: cheap top-k deletion, full adds LDS on held-out masks"),
    Option("heldout_masks", int, 16, "held-out masks of the LDS check (faithfulness full)", ge=4, le=1024, cli="none"),
    Option("logprob_template", LogprobTemplate, "chatml",
           "how an OpenAI-compatible server's completions endpoint sees the chat"),
    Option("group_fraction", float, 0.2, "share of the spans in one group of a hierarchical pass", gt=0, le=1,
           cli="none", replayed=True),
    Option("refine_threshold", float, 0.85, "share of impact the refined groups must cover", gt=0, le=1,
           flag="--threshold", replayed=True),
    Option("max_tokens", int, 128, "answer length cap", ge=1, le=32_768),
    Option("temperature", float, 0.0, "sampling temperature", ge=0, le=2, cli="none"),
    Option("seed", int, 42, "seed of the model and of the random masks", replayed=True),
    Option("concurrency", int, 20, "calls in flight at once", ge=1, le=1000, resumable=True, operational=True),
    Option("rpm", float | None, None, "requests per minute limit", gt=0, unset="no limit",
           resumable=True, operational=True),
    Option("timeout", float, 60.0, "seconds per request", gt=0, resumable=True, operational=True),
    # 4, not the SDK's 2: one failed call fails a run of hundreds, and with backoff
    # 0.5, 1, 2, 4 s (or the server's Retry-After) 4 retries ride out a ~8 s 5xx/429
    # storm, where 2 give up after ~1.5 s. Broken 200 answers get as many (backends/openai.py).
    Option("max_retries", int, 4, "retries of a failed or broken request", ge=0, le=20,
           resumable=True, operational=True),
    Option("budget", float | None, None, "maximum spend in USD; refuses or stops before passing it", ge=0,
           unset="no limit", resumable=True, operational=True,
           resume_help="maximum spend in USD (for resume: earlier sessions included)"),
    Option("price", Price | None, None, "USD per million tokens of the model", cli="none", unset="the price table"),
    Option("embed_price", Price | None, None, "USD per million tokens of the embedding model", cli="none",
           unset="the price table"),
    Option("cache", bool, True, "do not read or write the call cache", cli="negate", resumable=True, operational=True,
           resume_help="use the call cache (resume: on by default; rerun: off, so the model is asked again)"),
    Option("label", str | None, None, "a name for the run, e.g. v1.2, to find it by: prompt-attr ls --label v1.2",
           operational=True),
    Option("allow_insecure", bool, False,
           "allow a plain http --base-url that is not this machine; only on a trusted network", cli="switch",
           resumable=True, operational=True),
    Option("redact", bool, False, _REDACT_HELP, cli="switch"),
    Option("redact_patterns", list[str] | dict[str, str] | None, None,
           "one more secret pattern for --redact, repeatable; a group named secret masks only itself",
           cli="append", flag="--redact-pattern", metavar="REGEX"),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
# What a resumed or re-run run may change: how it is run, never what it computes.
RESUMABLE: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.resumable)
# What never changes what a run computes (how it ran, what it is called).
OPERATIONAL: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.operational)
# What the views read from a stored run.
REPLAYED: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.replayed)


"""prompt_attr: which part of your prompt made the model say that?

Spans of the prompt are deleted in concurrent batches of model calls, each
answer is scored against the baseline answer, and the scores become a
heat-map of the prompt. See README.md.
"""

from ._version import __version__
from .api import attribute, attribute_async, list_runs, load_run, score_deletions
from .config import AttributionConfig, Price
from .errors import (
    BackendError,
    BudgetRefused,
    MissingDependency,
    PromptAttrError,
    RunNotFound,
    UsageError,
)
from .result import Attribution, SpanResult
from .segment import Span, segment


def load_ipython_extension(ipython) -> None:
    """`%load_ext prompt_attr`: register %%attribute, %attribute_runs, %attribute_show."""
    from .magics import load_ipython_extension as register

    register(ipython)

__all__ = [
    "Attribution",
    "AttributionConfig",
    "BackendError",
    "BudgetRefused",
    "MissingDependency",
    "Price",
    "PromptAttrError",
    "RunNotFound",
    "Span",
    "SpanResult",
    "UsageError",
    "__version__",
    "attribute",
    "attribute_async",
    "list_runs",
    "load_ipython_extension",
    "load_run",
    "score_deletions",
    "segment",
]
